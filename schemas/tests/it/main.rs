//! The schemas crate's one integration-test binary: `cargo test -p ridesaga-schemas --test it`.

mod bad_inputs;
mod contract;
mod decode_props;
