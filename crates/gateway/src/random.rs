//! Random identifiers: connection ids, node id suffixes, generated dev secrets.

use rand::Rng;
use rand::distr::Alphanumeric;

/// A random alphanumeric string of `len` characters.
pub fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}
