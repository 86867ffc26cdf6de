// A typo in the resource of a scope the catalogue admits through
// `reports:*`: the suggestion is the scope meant, not the wildcard.
use scopekey::requires_scope;

#[requires_scope("reprots:export")]
async fn export() -> &'static str {
    "ok"
}

fn main() {
    let _ = export();
}
