//! Source access lists of a service (`allow_from`, `deny_from`): which clients may open
//! connections to it. The data ports bypass the kernel, so its firewall cannot filter them;
//! this is the filter an LVS admin keeps in iptables in front of IPVS, and DPVS's per-service
//! black- and whitelists.
//!
//! Each list is compiled once per snapshot into sorted, disjoint address ranges of the
//! engine's 128-bit [`Addr`] space (an IPv4 prefix `/p` is the range of `::ffff:0:0/96+p`),
//! so a look-up is a binary search whatever the list's length (a threat feed of 100,000
//! prefixes costs ~17 comparisons), and it is made only for a connection's first packet.

use crate::wire::parse::{ip_to_addr, Addr};
use ferrovs_cfg::IpNet;

/// A service's compiled lists: a source in `deny` is refused; else, if `allow` is not
/// empty, one outside it is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceAcl {
    allow: Ranges,
    deny: Ranges,
}

impl SourceAcl {
    /// The lists of a service, or `None` if both are empty (every source admitted, and no
    /// look-up made).
    pub fn new(allow: &[IpNet], deny: &[IpNet]) -> Option<SourceAcl> {
        if allow.is_empty() && deny.is_empty() {
            return None;
        }
        Some(SourceAcl { allow: Ranges::new(allow), deny: Ranges::new(deny) })
    }

    /// May a connection from `src` be opened?
    #[inline]
    pub fn admits(&self, src: Addr) -> bool {
        !self.deny.contains(src) && (self.allow.is_empty() || self.allow.contains(src))
    }
}

/// Sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Ranges(Vec<(Addr, Addr)>);

impl Ranges {
    fn new(nets: &[IpNet]) -> Ranges {
        let mut v: Vec<(Addr, Addr)> = nets.iter().map(range_of).collect();
        v.sort_unstable();
        let mut out: Vec<(Addr, Addr)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                // Overlapping or adjacent: one range.
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, a: Addr) -> bool {
        // The last range starting at or below `a`.
        let i = self.0.partition_point(|r| r.0 <= a);
        i > 0 && a <= self.0[i - 1].1
    }
}

/// The addresses of `n` in the engine's address space.
fn range_of(n: &IpNet) -> (Addr, Addr) {
    let lo = ip_to_addr(n.addr);
    let host_bits = if n.addr.is_ipv4() { 32 } else { 128 } - u32::from(n.prefix);
    let span = if host_bits >= 128 { Addr::MAX } else { (1u128 << host_bits) - 1 };
    let lo = lo & !span;
    (lo, lo | span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn net(s: &str) -> IpNet {
        let (a, p) = s.split_once('/').unwrap();
        IpNet { addr: a.parse().unwrap(), prefix: p.parse().unwrap() }
    }

    fn a(s: &str) -> Addr {
        ip_to_addr(s.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn deny_wins_then_the_allow_list_decides() {
        assert_eq!(SourceAcl::new(&[], &[]), None, "no lists: no look-up");
        let acl = SourceAcl::new(&[net("10.0.0.0/8"), net("2001:db8::/32")], &[net("10.9.0.0/16"), net("10.1.2.3/32")])
            .unwrap();
        for (src, ok) in [
            ("10.0.0.1", true),
            ("10.255.255.255", true),
            ("10.9.4.4", false),
            ("10.1.2.3", false),
            ("10.1.2.4", true),
            ("11.0.0.0", false),
            ("9.255.255.255", false),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
        ] {
            assert_eq!(acl.admits(a(src)), ok, "{src}");
        }
        // A deny list alone admits everything else, of both families.
        let acl = SourceAcl::new(&[], &[net("192.0.2.0/24")]).unwrap();
        assert!(!acl.admits(a("192.0.2.200")));
        assert!(acl.admits(a("192.0.3.1")));
        assert!(acl.admits(a("2001:db8::1")));
    }

    #[test]
    fn whole_families_and_edges() {
        // 0.0.0.0/0 is every IPv4 address and no IPv6 one; ::/0 is every address of both
        // in the engine's space, IPv4 included (the config refuses another family's entry).
        let v4 = SourceAcl::new(&[net("0.0.0.0/0")], &[]).unwrap();
        assert!(v4.admits(a("0.0.0.0")) && v4.admits(a("255.255.255.255")));
        assert!(!v4.admits(a("::1")) && !v4.admits(a("ffff::1")));
        let v6 = SourceAcl::new(&[], &[net("::/0")]).unwrap();
        assert!(!v6.admits(a("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) && !v6.admits(a("::")));
        // Adjacent and nested entries merge.
        let r = Ranges::new(&[net("10.0.1.0/24"), net("10.0.0.0/24"), net("10.0.0.128/25"), net("10.0.3.0/24")]);
        assert_eq!(r.0.len(), 2, "{r:?}");
    }

    proptest! {
        /// The ranges answer as a linear scan over the prefixes does.
        #[test]
        fn ranges_agree_with_a_scan(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..40),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(x, p)| {
                    let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                    IpNet { addr: IpAddr::V4((x & m).into()), prefix: p }
                })
                .collect();
            let r = Ranges::new(&nets);
            for w in r.0.windows(2) {
                prop_assert!(w[0].1.saturating_add(1) < w[1].0, "sorted, disjoint, not adjacent");
            }
            // Probes near the prefixes' edges as well as anywhere.
            let edges = nets.iter().flat_map(|n| {
                let (lo, hi) = range_of(n);
                [lo as u32, hi as u32, (lo as u32).wrapping_sub(1), (hi as u32).wrapping_add(1)]
            });
            for x in probes.into_iter().chain(edges) {
                let ip = IpAddr::V4(x.into());
                prop_assert_eq!(r.contains(ip_to_addr(ip)), nets.iter().any(|n| n.contains(ip)), "{}", ip);
            }
        }
    }
}
