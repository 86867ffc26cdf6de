use actix_web::HttpResponse;
use scopekey::requires_scope;

#[requires_scope(
    "orders:read_every_single_order_ever_placed_by_any_customer_in_any_region_including_archived_ones_and_the_deleted_ones_too_please_thanks"
)]
async fn list_orders() -> HttpResponse {
    HttpResponse::Ok().finish()
}

fn main() {}
