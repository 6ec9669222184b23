//! The `abuse` suite: what a hostile client, a damaged disk or a careless operator does to a
//! real node, with bounded sizes, asserting that the node refuses or survives and that every
//! acknowledged write is still there.

mod bounded;
mod clock;
mod damage;
mod disk;
mod membership;
