//! The results of one batch call, as they travel and as they are kept.
//!
//! On the wire they are a sequence of `Result<R, BatchItemError>` (the
//! encoding of `Vec<Result<R, BatchItemError>>`); in memory the values and
//! the rare errors are kept apart, so that a batch of a hundred thousand
//! integers decodes into one `Vec<R>` and no per-item enum.

use serde::de::{DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;

/// Why one item of a batch call failed (the others are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchItemError {
    /// The item's call panicked, with this message.
    Panicked(String),
    /// The item's call returned this error.
    Failed(String),
}

impl fmt::Display for BatchItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchItemError::Panicked(m) => write!(f, "panicked: {m}"),
            BatchItemError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for BatchItemError {}

/// The outcome of every item of one batch call, in the order of its
/// arguments: a value or a [`BatchItemError`] each.
///
/// ```
/// use seedcore::process::{BatchItemError, BatchResults};
///
/// let mut r = BatchResults::new();
/// r.push(Ok(1));
/// r.push(Err(BatchItemError::Failed("odd".into())));
/// r.push(Ok(3));
/// assert_eq!(r.len(), 3);
/// assert_eq!(r.failed(), 1);
/// let all: Vec<_> = r.into_iter().collect();
/// assert_eq!(all[2], Ok(3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResults<R> {
    /// The values of the items that succeeded, in order.
    values: Vec<R>,
    /// The failed items: (index among all items, why), ascending.
    errors: Vec<(usize, BatchItemError)>,
}

impl<R> Default for BatchResults<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> BatchResults<R> {
    /// No results yet.
    pub fn new() -> Self {
        BatchResults {
            values: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Room for `n` values.
    pub fn with_capacity(n: usize) -> Self {
        BatchResults {
            values: Vec::with_capacity(n),
            errors: Vec::new(),
        }
    }

    /// Appends the next item's outcome.
    pub fn push(&mut self, r: Result<R, BatchItemError>) {
        match r {
            Ok(v) => self.values.push(v),
            Err(e) => self.errors.push((self.len(), e)),
        }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.values.len() + self.errors.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many items failed.
    pub fn failed(&self) -> usize {
        self.errors.len()
    }

    /// The values of the items that succeeded (in order) and the failed
    /// items with their index among all items (ascending).
    pub fn into_parts(self) -> (Vec<R>, Vec<(usize, BatchItemError)>) {
        (self.values, self.errors)
    }

    /// Every item's outcome, in order.
    fn outcomes(&self) -> impl Iterator<Item = Result<&R, &BatchItemError>> {
        Merge {
            values: self.values.iter(),
            errors: self.errors.iter().map(|(i, e)| (*i, e)).peekable(),
            at: 0,
        }
    }
}

/// Interleaves values and indexed errors back into item order.
struct Merge<V, E: Iterator> {
    values: V,
    errors: std::iter::Peekable<E>,
    at: usize,
}

impl<V, E, R, X> Iterator for Merge<V, E>
where
    V: Iterator<Item = R>,
    E: Iterator<Item = (usize, X)>,
{
    type Item = Result<R, X>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.at;
        self.at += 1;
        if self.errors.peek().is_some_and(|(i, _)| *i == at) {
            return self.errors.next().map(|(_, e)| Err(e));
        }
        match self.values.next() {
            Some(v) => Some(Ok(v)),
            // Values exhausted: any errors left follow (indices past the
            // end cannot come from `push` or decoding).
            None => self.errors.next().map(|(_, e)| Err(e)),
        }
    }
}

/// The outcomes of a [`BatchResults`], in item order.
pub struct BatchIntoIter<R>(
    Merge<std::vec::IntoIter<R>, std::vec::IntoIter<(usize, BatchItemError)>>,
);

impl<R> fmt::Debug for BatchIntoIter<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchIntoIter").finish_non_exhaustive()
    }
}

impl<R> Iterator for BatchIntoIter<R> {
    type Item = Result<R, BatchItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl<R> IntoIterator for BatchResults<R> {
    type Item = Result<R, BatchItemError>;
    type IntoIter = BatchIntoIter<R>;

    fn into_iter(self) -> Self::IntoIter {
        BatchIntoIter(Merge {
            values: self.values.into_iter(),
            errors: self.errors.into_iter().peekable(),
            at: 0,
        })
    }
}

impl<R> FromIterator<Result<R, BatchItemError>> for BatchResults<R> {
    fn from_iter<I: IntoIterator<Item = Result<R, BatchItemError>>>(it: I) -> Self {
        let it = it.into_iter();
        let mut out = BatchResults::with_capacity(it.size_hint().0);
        for r in it {
            out.push(r);
        }
        out
    }
}

impl<R: Serialize> Serialize for BatchResults<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for r in self.outcomes() {
            seq.serialize_element(&r)?;
        }
        seq.end()
    }
}

impl<'de, R: DeserializeOwned> Deserialize<'de> for BatchResults<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<R>(PhantomData<R>);

        impl<'de, R: DeserializeOwned> Visitor<'de> for Seq<R> {
            type Value = BatchResults<R>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of batch item results")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // The hint comes off the wire: cap what it may reserve.
                let mut out =
                    BatchResults::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(r) = seq.next_element::<Result<R, BatchItemError>>()? {
                    out.push(r);
                }
                Ok(out)
            }
        }

        d.deserialize_seq(Seq(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Result<u64, BatchItemError>> {
        (0..50u64)
            .map(|i| match i % 7 {
                0 => Err(BatchItemError::Failed(format!("f{i}"))),
                3 => Err(BatchItemError::Panicked(format!("p{i}"))),
                _ => Ok(i * 1000),
            })
            .collect()
    }

    #[test]
    fn wire_form_is_a_vec_of_results() {
        let plain = sample();
        let ours: BatchResults<u64> = plain.iter().cloned().collect();
        let bytes = postcard::to_allocvec(&ours).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&plain).unwrap());
        let back: BatchResults<u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, ours);
        assert_eq!(back.into_iter().collect::<Vec<_>>(), plain);
    }

    #[test]
    fn parts_keep_indices() {
        let r: BatchResults<u64> = sample().into_iter().collect();
        assert_eq!(r.len(), 50);
        assert_eq!(r.failed(), 15);
        let (values, errors) = r.into_parts();
        assert_eq!(values.len(), 35);
        assert_eq!(errors[0], (0, BatchItemError::Failed("f0".into())));
        assert_eq!(errors[1], (3, BatchItemError::Panicked("p3".into())));
        assert_eq!(values[0], 1000);
    }

    #[test]
    fn only_errors_and_empty() {
        let all_bad: Vec<Result<u8, BatchItemError>> = (0..3)
            .map(|i| Err(BatchItemError::Failed(i.to_string())))
            .collect();
        let r: BatchResults<u8> = all_bad.iter().cloned().collect();
        assert_eq!(r.into_iter().collect::<Vec<_>>(), all_bad);
        let empty = BatchResults::<u8>::new();
        assert!(empty.is_empty());
        let bytes = postcard::to_allocvec(&empty).unwrap();
        assert!(postcard::from_bytes::<BatchResults<u8>>(&bytes)
            .unwrap()
            .is_empty());
    }
}
