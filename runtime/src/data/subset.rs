//! A data set restricted to some of its samples: how long-tailed training sets are made from
//! a balanced pool without copying any image.

use std::sync::Arc;

use anyhow::bail;

use super::long_tail::long_tailed_indices;
use super::Dataset;
use super::Image;

/// The samples `indices` of `inner`, in that order. Labels are copied at construction, so
/// [`Dataset::labels`] stays a slice.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    labels: Vec<u32>,
}

impl Subset {
    /// The samples `indices` of `inner`; every index must be below `inner.len()`.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> anyhow::Result<Self> {
        let all = inner.labels();
        let mut labels = Vec::with_capacity(indices.len());
        for &i in &indices {
            let Some(&l) = all.get(i) else {
                bail!(
                    "subset index {i} is out of range for a data set of {} samples",
                    inner.len()
                );
            };
            labels.push(l);
        }
        Ok(Subset {
            inner,
            indices,
            labels,
        })
    }

    /// The long-tailed subset of `inner` at `imbalance` (see [`long_tailed_indices`]).
    pub fn long_tailed(inner: Arc<dyn Dataset>, imbalance: f64) -> anyhow::Result<Self> {
        let indices = long_tailed_indices(inner.labels(), inner.num_classes(), imbalance)?;
        Self::new(inner, indices)
    }

    /// The indices into the inner data set.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    pub fn inner(&self) -> &Arc<dyn Dataset> {
        &self.inner
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn load(&self, i: usize) -> anyhow::Result<Image> {
        self.inner.load(self.indices[i])
    }

    fn describe(&self, i: usize) -> String {
        self.inner.describe(self.indices[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Digits, Split};

    #[test]
    fn digits_long_tailed_counts() {
        let pool: Arc<dyn Dataset> = Arc::new(Digits::new(Split::Train));
        let counts = |d: &Subset| {
            let mut n = vec![0; 10];
            for &l in d.labels() {
                n[l as usize] += 1;
            }
            n
        };
        // n_max = 124, the smallest training pool (class 8).
        let lt10 = Subset::long_tailed(pool.clone(), 10.0).unwrap();
        assert_eq!(counts(&lt10), [124, 96, 74, 57, 44, 34, 26, 20, 16, 12]);
        let lt100 = Subset::long_tailed(pool.clone(), 100.0).unwrap();
        assert_eq!(counts(&lt100), [124, 74, 44, 26, 16, 9, 5, 3, 2, 1]);
        let balanced = Subset::long_tailed(pool.clone(), 1.0).unwrap();
        assert_eq!(counts(&balanced), [124; 10]);
        assert_eq!(lt10.num_classes(), 10);
        assert_eq!(lt10.describe(0), pool.describe(lt10.indices()[0]));
        assert_eq!(lt10.load(3).unwrap(), pool.load(lt10.indices()[3]).unwrap());
    }

    #[test]
    fn out_of_range_index_is_an_error() {
        let pool: Arc<dyn Dataset> = Arc::new(Digits::new(Split::Test));
        assert!(Subset::new(pool, vec![0, 500]).is_err());
    }
}
