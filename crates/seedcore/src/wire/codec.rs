//! Encoding into a `Vec<u8>` with postcard, tuned for many small values.
//!
//! postcard's own `Vec` output copies each varint with a `memcpy` call of
//! one to ten bytes; for a batch of a hundred thousand integers those calls
//! cost more than the encoding. This output copies short slices byte by
//! byte and starts from a capacity the caller can guess.

use postcard::ser_flavors::Flavor;
use serde::Serialize;

/// Slices up to this long are copied byte by byte (varints are at most 10
/// bytes, 19 for `u128`).
const SHORT: usize = 24;

/// A growable output for postcard.
struct VecOut(Vec<u8>);

impl Flavor for VecOut {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        self.0.push(b);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= SHORT {
            // Each push checks the capacity, which keeps the compiler from
            // turning this loop back into a `memcpy` call.
            for &b in data {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Encodes `value` with postcard into a new `Vec` of at least `capacity`
/// bytes (a guess; it grows as needed).
pub(crate) fn to_vec<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> postcard::Result<Vec<u8>> {
    postcard::serialize_with_flavor(value, VecOut(Vec::with_capacity(capacity)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_as_postcard() {
        let values: Vec<(u64, i32, String, Vec<u8>, u128)> = (0..300u64)
            .map(|i| {
                (
                    i * 0x1_0000_0001,
                    -(i as i32),
                    "x".repeat(i as usize % 40),
                    vec![i as u8; i as usize % 70],
                    u128::MAX >> (i % 128),
                )
            })
            .collect();
        for cap in [0, 1, 4096] {
            assert_eq!(
                to_vec(&values, cap).unwrap(),
                postcard::to_allocvec(&values).unwrap()
            );
        }
    }
}
