//! Fixed-key SipHash for sh/dh/mh: the same input gives the same server on every worker and
//! after every restart (unlike std's `RandomState`). SipHash-1-3 is what std uses for `HashMap`;
//! with fixed keys it is not DoS-resistant, which does not matter here: a client can only choose
//! which server it lands on, not make the lookup slower.

use std::net::IpAddr;

/// A 128-bit SipHash key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipKey(pub u64, pub u64);

/// Key for client/destination lookups (sh, dh, mh lookup).
pub const KEY_LOOKUP: SipKey = SipKey(0x9e37_79b9_7f4a_7c15, 0xf39c_c060_5ced_c834);
/// Key for Maglev offsets.
pub const KEY_OFFSET: SipKey = SipKey(0x2654_4357_61aa_5ec1, 0x0d1b_54a3_2d19_2ed0);
/// Key for Maglev skips.
pub const KEY_SKIP: SipKey = SipKey(0x2654_46a2_c2b2_ae35, 0x7f4a_7c15_9e37_79b9);

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-C-D of a message given as its 8-byte little-endian blocks, the last one already
/// padded (the message's final 0 to 7 bytes, and its length mod 256 in the top byte).
#[inline(always)]
fn sip_blocks<const C: usize, const D: usize>(k: SipKey, blocks: impl IntoIterator<Item = u64>) -> u64 {
    let mut v = [
        k.0 ^ 0x736f_6d65_7073_6575,
        k.1 ^ 0x646f_7261_6e64_6f6d,
        k.0 ^ 0x6c79_6765_6e65_7261,
        k.1 ^ 0x7465_6462_7974_6573,
    ];
    for m in blocks {
        v[3] ^= m;
        for _ in 0..C {
            round(&mut v);
        }
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-C-D of `data`: its whole 8-byte blocks, then the padded last one.
#[inline]
fn sip<const C: usize, const D: usize>(k: SipKey, data: &[u8]) -> u64 {
    let chunks = data.chunks_exact(8);
    let mut last = (data.len() as u64) << 56;
    for (i, b) in chunks.remainder().iter().enumerate() {
        last |= (*b as u64) << (8 * i);
    }
    let whole = chunks.map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
    sip_blocks::<C, D>(k, whole.chain(std::iter::once(last)))
}

/// SipHash-2-4 (the SYN proxy's cookies: Linux's use SipHash too) of a message given as its
/// 8-byte little-endian blocks, the last one already padded: the message's final 0 to 7
/// bytes, and its length mod 256 in the top byte. For fixed-layout messages built from
/// words, with no byte buffer in between.
#[inline]
pub fn sip24_blocks(k: SipKey, blocks: &[u64]) -> u64 {
    sip_blocks::<2, 4>(k, blocks.iter().copied())
}

/// SipHash-1-3 of `data`.
pub fn sip13(k: SipKey, data: &[u8]) -> u64 {
    sip::<1, 3>(k, data)
}

/// Hash of an address, a port and a salt (fallback rounds use the salt), as SipHash-1-3 over
/// `addr bytes (4 or 16) | port BE | salt LE`.
#[inline]
pub fn hash_addr(k: SipKey, addr: IpAddr, port: u16, salt: u32) -> u64 {
    let mut buf = [0u8; 22];
    let n = match addr {
        IpAddr::V4(a) => {
            buf[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            buf[..16].copy_from_slice(&a.octets());
            16
        }
    };
    buf[n..n + 2].copy_from_slice(&port.to_be_bytes());
    buf[n + 2..n + 6].copy_from_slice(&salt.to_le_bytes());
    sip13(k, &buf[..n + 6])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    #[test]
    #[allow(deprecated)]
    fn sip24_matches_std_reference() {
        // std's (deprecated) SipHasher is SipHash-2-4 over the raw written bytes; sharing the
        // round code proves our 1-3 variant's plumbing.
        for len in 0..40usize {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut h = std::hash::SipHasher::new_with_keys(1, 2);
            h.write(&data);
            assert_eq!(sip::<2, 4>(SipKey(1, 2), &data), h.finish(), "len {len}");
        }
    }

    #[test]
    fn sip24_blocks_reference_vector() {
        // The SipHash paper's example: key 00..0f, message 00..0e (15 bytes: one whole block,
        // then 08..0e with the length 15 in the top byte).
        let k =
            SipKey(u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]), u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]));
        let m0 = u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]);
        let m1 = u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]);
        assert_eq!(sip24_blocks(k, &[m0, m1]), 0xa129_ca61_49be_45e5);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(sip::<2, 4>(k, &msg), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn pinned_values_never_change() {
        // Changing these moves every sh/dh/mh flow on upgrade: don't.
        let v4 = hash_addr(KEY_LOOKUP, "192.0.2.1".parse().unwrap(), 80, 0);
        let v6 = hash_addr(KEY_LOOKUP, "2001:db8::1".parse().unwrap(), 0, 7);
        assert_eq!((v4, v6), (PINNED_V4, PINNED_V6));
    }

    const PINNED_V4: u64 = 8049799113901121782;
    const PINNED_V6: u64 = 9260653251618594371;
}
