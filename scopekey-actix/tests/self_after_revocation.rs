//! `GET /api-keys/self` for a key revoked (or rotated out) through another
//! node, while this node's verification cache still holds it: the uniform
//! 401 `invalid_token`, never a 200 showing the key as `revoked` or
//! `expired` to its holder.

mod common;

use actix_web::{App, test};
use common::*;
use scopekey_actix::ApiKeyAuth;
use scopekey_runtime::{Actor, KeyFormat, ManualClock, NewKey, RotateOptions};
use time::Duration;

async fn refused_once_gone_elsewhere(db: &Db) {
    let clock = ManualClock::starting_now();
    let here = db.node(&clock).await;
    let elsewhere = db.node(&clock).await;
    let app = test::init_service(
        App::new()
            .app_data(here.clone())
            .wrap(ApiKeyAuth::new())
            .configure(scopekey_actix::routes),
    )
    .await;
    let self_with = |key: &str, how: Presenting| {
        how.present(test::TestRequest::get().uri("/api-keys/self"), key)
            .to_request()
    };
    let unknown = KeyFormat::default().generate().unwrap();
    let refusal = Answer::read(
        test::call_service(&app, self_with(unknown.expose_secret(), Presenting::Bearer)).await,
    )
    .await;
    refusal.assert_invalid_token();

    let revoked = here
        .create(NewKey::new("revoked", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    let rotated = here
        .create(NewKey::new("rotated", ["orders:read"]), Actor::System)
        .await
        .unwrap();
    for created in [&revoked, &rotated] {
        // Shown while valid, and now cached here for the hour.
        let res = Answer::read(
            test::call_service(
                &app,
                self_with(created.plaintext.expose_secret(), Presenting::Bearer),
            )
            .await,
        )
        .await;
        assert_eq!(res.status, 200, "{res:?}");
        assert_eq!(res.json()["status"], "active");
    }
    elsewhere
        .revoke(revoked.key.id, Some("leaked"), Actor::System)
        .await
        .unwrap();
    let grace_zero = RotateOptions {
        grace: Some(Duration::ZERO),
        ..RotateOptions::default()
    };
    elsewhere
        .rotate(rotated.key.id, grace_zero, Actor::System)
        .await
        .unwrap();
    // Now `revoked` and `expired` in the store; still cached here.
    for created in [&revoked, &rotated] {
        let key = created.plaintext.expose_secret();
        assert!(
            here.verify_cached(key).is_some(),
            "the test needs it cached"
        );
        for how in Presenting::BOTH {
            let res = Answer::read(test::call_service(&app, self_with(key, how)).await).await;
            assert_eq!(res, refusal, "{} in {how:?}", created.key.name);
        }
    }
}

both_backends!(self_of_a_key_gone_elsewhere, refused_once_gone_elsewhere);
