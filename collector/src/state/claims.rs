//! `Claims`: which type each metric name has while agents use it. Prometheus cannot expose
//! one name with two types, so a family whose type differs from the name's is dropped (the
//! rest of its message is kept). Documented names (`pinned_kind`) always have their type;
//! any other name has the type of the live agents that report it, and is free again as soon
//! as none does, so neither a name seen once nor an agent that went away holds it forever.

use std::collections::HashMap;

use pantau_protocol::{MetricKind, pinned_kind};

use super::series::Named;

/// A name's type and how many agents' current families use it.
#[derive(Debug, Clone, Copy)]
struct Claim {
    kind: MetricKind,
    users: usize,
}

/// Claims of every name in use, except pinned names, which need none.
#[derive(Debug, Default)]
pub struct Claims {
    names: HashMap<String, Claim>,
}

/// A family left out because its name has another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    /// The type the name has.
    pub known: MetricKind,
}

/// Whether `incoming` has exactly `own`'s names and types, in order: the usual message of an
/// agent whose families did not change. All of it is then admitted (each family was admitted
/// with that type before, and pinned types never change) and the claims stay as they are.
pub fn same_shape(own: &[impl Named], incoming: &[impl Named]) -> bool {
    own.len() == incoming.len()
        && own
            .iter()
            .zip(incoming)
            .all(|(old, new)| old.kind() == new.kind() && old.name() == new.name())
}

impl Claims {
    /// The type `name` must have for an agent whose current families are `own`: pinned, or
    /// the type other agents use it with. An agent alone with a name may change its type.
    fn required(&self, name: &str, own: &[impl Named]) -> Option<MetricKind> {
        if let Some(kind) = pinned_kind(name) {
            return Some(kind);
        }
        let claim = self.names.get(name)?;
        let mine = usize::from(own.iter().any(|family| family.name() == name));
        (claim.users > mine).then_some(claim.kind)
    }

    /// Splits `incoming` into the families that may replace `own` and those in conflict.
    pub fn admit<F: Named>(&self, own: &[impl Named], incoming: Vec<F>) -> (Vec<F>, Vec<Conflict>) {
        let mut kept = Vec::with_capacity(incoming.len());
        let mut conflicts = Vec::new();
        for family in incoming {
            match self.required(family.name(), own) {
                Some(known) if known != family.kind() => conflicts.push(Conflict {
                    name: family.name().to_owned(),
                    known,
                }),
                _ => kept.push(family),
            }
        }
        (kept, conflicts)
    }

    /// An agent's families changed from `old` to `new` (either may be empty).
    pub fn replace(&mut self, old: &[impl Named], new: &[impl Named]) {
        self.release_all(old);
        for family in new.iter().filter(|f| pinned_kind(f.name()).is_none()) {
            let claim = self.names.entry(family.name().to_owned()).or_insert(Claim {
                kind: family.kind(),
                users: 0,
            });
            // `admit` let the family through, so either the types agree or nobody else
            // uses the name any more and this agent sets it.
            claim.kind = family.kind();
            claim.users += 1;
        }
    }

    /// An agent's families `old` are gone (the agent went down or stopped reporting).
    pub fn release_all(&mut self, old: &[impl Named]) {
        for family in old {
            self.release(family.name());
        }
    }

    fn release(&mut self, name: &str) {
        if let Some(claim) = self.names.get_mut(name) {
            claim.users = claim.users.saturating_sub(1);
            if claim.users == 0 {
                self.names.remove(name);
            }
        }
    }

    /// Names currently claimed (pinned names excluded).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use pantau_protocol::{AnyFamily, Family, MetricKind};

    use super::*;

    fn family(name: &str, kind: MetricKind) -> AnyFamily {
        AnyFamily::Plain(Family {
            name: name.to_owned(),
            kind,
            help: String::new(),
            samples: Vec::new(),
        })
    }

    #[test]
    fn same_shape_means_same_names_and_types_in_order() {
        let own = [
            family("a", MetricKind::Gauge),
            family("b", MetricKind::Counter),
        ];
        assert!(same_shape(&own, &own.clone()));
        assert!(!same_shape(&own, &[family("a", MetricKind::Gauge)]));
        assert!(!same_shape(
            &own,
            &[
                family("a", MetricKind::Gauge),
                family("b", MetricKind::Gauge)
            ]
        ));
        assert!(!same_shape(
            &own,
            &[
                family("b", MetricKind::Counter),
                family("a", MetricKind::Gauge)
            ]
        ));
        let none: [AnyFamily; 0] = [];
        assert!(same_shape(&none, &none));
    }
}
