//! Helpers shared by the integration tests.
pub mod oci_fixture;
