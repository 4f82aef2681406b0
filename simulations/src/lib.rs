//! shoal-sim: models of shoal that run without a network.
//!
//! [`swarm`] is `shoal-sim swarm`: a live channel's broadcaster and
//! viewers running the node's own sans-IO planner and Bitswap engine over a
//! modelled network, to measure the protocol apart from any machine.
//!
//! The tokenomics model behind `shoal-sim tokenomics`:
//!
//! - [`table1`]: the study's Table 1 recomputed from its own assumptions;
//! - [`model`]: a monthly model of ad revenue split 70/20/10 to the cent,
//!   viewer rewards minted against revenue, a token sink and a token price;
//! - [`chart`]: hand-written SVG line charts;
//! - [`money`]: cents and micro-TKN written exactly;
//! - [`tokenomics`]: the command: runs everything, writes CSV and SVG files
//!   and returns the text to print;
//! - [`cli`]: the command line, kept here so that tests can parse it.
//!
//! Money is integer cents and tokens are integer micro-TKN, so every split
//! adds up to the cent; only ratios shown to people (prices, payouts per
//! 1,000 views) are floating point.

pub mod chart;
pub mod cli;
mod error;
pub mod model;
pub mod money;
pub mod swarm;
pub mod table1;
pub mod tokenomics;

pub use error::Error;
