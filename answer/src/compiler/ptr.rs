//! PTR names: which units point a PTR at each address.

use super::*;

/// The units that point a PTR at each address. Nearly every address has
/// exactly one, so that one is kept in a map of plain integers (8 bytes a
/// pair for IPv4, where a map of `IpAddr` to a list took 48), and any
/// further units in a side map.
#[derive(Debug, Default)]
pub(super) struct PtrSources {
    pub(super) v4: Map<u32, u32>,
    pub(super) v6: Map<u128, u32>,
    /// Units after the first, for addresses several units point at.
    pub(super) more: Map<IpAddr, Vec<u32>>,
}

impl PtrSources {
    pub(super) fn first_mut(&mut self, ip: IpAddr) -> Option<&mut u32> {
        match ip {
            IpAddr::V4(v4) => self.v4.get_mut(&u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get_mut(&u128::from(v6)),
        }
    }

    /// The units pointing at `ip`, the first first.
    pub(super) fn ids(&self, ip: IpAddr) -> impl Iterator<Item = u32> + '_ {
        let first = match ip {
            IpAddr::V4(v4) => self.v4.get(&u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(&u128::from(v6)),
        };
        let more = first.and_then(|_| self.more.get(&ip));
        first
            .copied()
            .into_iter()
            .chain(more.into_iter().flatten().copied())
    }

    pub(super) fn add(&mut self, ip: IpAddr, id: u32) {
        if self.first_mut(ip).is_some() {
            self.more.entry(ip).or_default().push(id);
            return;
        }
        match ip {
            IpAddr::V4(v4) => self.v4.insert(u32::from(v4), id),
            IpAddr::V6(v6) => self.v6.insert(u128::from(v6), id),
        };
    }

    pub(super) fn remove(&mut self, ip: IpAddr, id: u32) {
        let Some(&mut first) = self.first_mut(ip) else {
            return;
        };
        let more = self.more.get_mut(&ip);
        let next = if first == id {
            // The first goes: the next, if any, takes its place.
            more.and_then(Vec::pop)
        } else {
            if let Some(more) = more {
                more.retain(|x| *x != id);
            }
            Some(first)
        };
        if self.more.get(&ip).is_some_and(Vec::is_empty) {
            self.more.remove(&ip);
        }
        match (next, ip) {
            (Some(next), _) => {
                if let Some(first) = self.first_mut(ip) {
                    *first = next;
                }
            }
            (None, IpAddr::V4(v4)) => {
                self.v4.remove(&u32::from(v4));
            }
            (None, IpAddr::V6(v6)) => {
                self.v6.remove(&u128::from(v6));
            }
        }
    }
}

/// The owner of PTR names in the names table.
pub(super) const PTR_OWNER: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_sources_keep_every_unit_of_an_address_through_removals() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let mut sources = PtrSources::default();
        let ids = |s: &PtrSources, ip| {
            let mut ids: Vec<u32> = s.ids(ip).collect();
            ids.sort_unstable();
            ids
        };
        for ip in [v4, v6] {
            for id in [7, 3, 9] {
                sources.add(ip, id);
            }
            assert_eq!(ids(&sources, ip), [3, 7, 9]);
            // The first goes: another takes its place.
            sources.remove(ip, 7);
            assert_eq!(ids(&sources, ip), [3, 9]);
            // One not there changes nothing.
            sources.remove(ip, 42);
            assert_eq!(ids(&sources, ip), [3, 9]);
            sources.remove(ip, 3);
            sources.remove(ip, 9);
            assert!(ids(&sources, ip).is_empty());
        }
        assert!(sources.v4.is_empty() && sources.v6.is_empty() && sources.more.is_empty());
        // A later unit goes before the first.
        sources.add(v4, 1);
        sources.add(v4, 2);
        sources.remove(v4, 2);
        assert_eq!(ids(&sources, v4), [1]);
        assert!(sources.more.is_empty());
    }
}
