//! Grades lesson 13's choreography under a small soak: orders with shortfalls, declines, a flaky mail server,
//! duplicated deliveries and an inventory that crashes halfway — and every invariant holds at the end.

mod common;

use std::time::Duration;

use common::{deployment, shop_topics};
use solution_13::soak::{self, SoakConfig};

#[tokio::test(flavor = "multi_thread")]
async fn a_small_soak_keeps_every_invariant() {
    let topics = shop_topics().await;
    let deployment = deployment();
    let config = SoakConfig { orders: 150, within: Duration::from_secs(90), ..SoakConfig::default() };
    let report = tokio::task::spawn_blocking(move || soak::run(&topics, &deployment, config, "soak", |_| {}))
        .await
        .unwrap()
        .expect("the soak runs");
    println!("{report:#?}");
    assert!(report.holds(), "{report:#?}");
}
