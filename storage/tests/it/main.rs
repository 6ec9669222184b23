//! Integration tests of the storage crate against a real RocksDB in a temporary directory.

mod model;
