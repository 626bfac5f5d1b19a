//! The shop's catalogues, shipped with the lesson as seed 004 has them: `data/products.json` (id, name, category,
//! price) and `data/users.json` (id, region, segment). The analytics join each event to them: a purchase's revenue
//! needs its product's price, activity by segment needs its user's segment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A product of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub category: String,
    pub price_cents: u64,
}

/// A customer's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Segment {
    Premium,
    Standard,
}

/// A user of the shop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub region: String,
    pub segment: Segment,
}

/// Both catalogues, indexed by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub products: BTreeMap<String, Product>,
    pub users: BTreeMap<String, User>,
}

impl Catalog {
    /// The catalogues shipped with the lesson.
    pub fn shipped() -> Catalog {
        Catalog::parse(include_str!("../data/products.json"), include_str!("../data/users.json"))
            .expect("the shipped catalogues parse")
    }

    /// Catalogues from their JSON text.
    pub fn parse(products: &str, users: &str) -> anyhow::Result<Catalog> {
        let products: Vec<Product> = serde_json::from_str(products)?;
        let users: Vec<User> = serde_json::from_str(users)?;
        Ok(Catalog {
            products: products.into_iter().map(|p| (p.id.clone(), p)).collect(),
            users: users.into_iter().map(|u| (u.id.clone(), u)).collect(),
        })
    }

    /// The price of `product_id`, 0 for a product the catalogue does not have.
    pub fn price_of(&self, product_id: &str) -> u64 {
        self.products.get(product_id).map_or(0, |p| p.price_cents)
    }

    /// The segment of `user_id`; a user the catalogue does not have counts as `Standard`.
    pub fn segment_of(&self, user_id: &str) -> Segment {
        self.users.get(user_id).map_or(Segment::Standard, |u| u.segment)
    }
}
