//! Label values that many apps send alike (the portrait's provinces, cities, devices), held
//! once for every app that exports them.
//!
//! At a thousand apps the portrait is two thirds of the series; each of its names is one of a
//! few hundred, so holding it once instead of once per app is most of the memory of the
//! exporter. Names nobody holds any longer are forgotten when the table has grown to twice
//! what was held at the last pruning: whatever names an upstream invents, the table is bounded
//! by what is exported.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex};

/// A shared name: one pointer wide (an `Arc<str>` is two), as a portrait holds hundreds per
/// app.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Arc<Box<str>>);

impl Deref for Name {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Name {
    /// Whether `self` and `other` are the same allocation.
    pub fn ptr_eq(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Names below this count are never pruned: a pruning would cost more than it saves.
const PRUNE_FROM: usize = 1024;

/// A table of shared names.
#[derive(Debug, Default)]
pub struct Names {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    names: HashSet<Name>,
    /// The size from which the next pruning is done.
    prune_at: usize,
}

impl Names {
    /// The shared copy of `text`.
    pub fn get(&self, text: &str) -> Name {
        let mut table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(name) = table.names.get(text) {
            return name.clone();
        }
        if table.names.len() >= table.prune_at.max(PRUNE_FROM) {
            table.names.retain(|name| Arc::strong_count(&name.0) > 1);
            table.prune_at = table.names.len() * 2;
        }
        let name = Name(Arc::new(Box::from(text)));
        table.names.insert(name.clone());
        name
    }

    /// How many names the table holds.
    pub fn len(&self) -> usize {
        let table = self
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        table.names.len()
    }

    /// Whether the table holds no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The table every report shares.
static NAMES: LazyLock<Names> = LazyLock::new(Names::default);

/// The shared copy of `text`, from the table every report shares.
pub fn name(text: &str) -> Name {
    NAMES.get(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_asked_twice_is_one_allocation() {
        let names = Names::default();
        let first = names.get("广东省");
        let second = names.get("广东省");
        assert!(first.ptr_eq(&second));
        assert_eq!(std::mem::size_of::<Name>(), std::mem::size_of::<usize>());
        assert_eq!(names.len(), 1);
        assert_eq!(&*names.get("北京"), "北京");
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn names_nobody_holds_are_forgotten_and_the_table_stays_bounded() {
        let names = Names::default();
        let kept: Vec<Name> = (0..100).map(|n| names.get(&format!("kept {n}"))).collect();
        for n in 0..100_000 {
            drop(names.get(&format!("invented {n}")));
            assert!(
                names.len() <= 2 * PRUNE_FROM + kept.len(),
                "{}",
                names.len()
            );
        }
        for (n, name) in kept.iter().enumerate() {
            assert!(name.ptr_eq(&names.get(&format!("kept {n}"))));
        }
    }
}
