//! Systematic Reed-Solomon erasure coding of segments.
//!
//! A segment of `len` bytes is cut into `k` data shards of `shard_size` bytes
//! (the segment's own bytes, the last shard zero-padded) and extended with `m`
//! parity shards. Any `k` of the `k + m` shards rebuild the segment; when the
//! `k` data shards are all there, rebuilding is a copy.
//!
//! The arithmetic is reed-solomon-simd (Leopard-style FFT over GF(2^16), SIMD
//! picked at run time: SSSE3/AVX2 on x86, Neon on ARM). `docs/BENCHMARKS.md`
//! has the numbers behind that choice.

use reed_solomon_simd::{EncoderResult, ReedSolomonDecoder, ReedSolomonEncoder};

/// Shards are a multiple of this many bytes: reed-solomon-simd needs an even
/// size, and 64 keeps its SIMD loops on whole vectors.
pub const SHARD_ALIGN: usize = 64;

/// Why a segment could not be coded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("{have} of {total} shards are available; {need} are needed to rebuild the segment")]
    NotEnoughShards {
        have: usize,
        need: usize,
        total: usize,
    },
    #[error("shard {index} is {len} bytes, expected {shard_size}")]
    WrongShardSize {
        index: usize,
        len: usize,
        shard_size: usize,
    },
    #[error("invalid coding parameters: {0}")]
    Parameters(String),
}

impl From<reed_solomon_simd::Error> for CodecError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        CodecError::Parameters(e.to_string())
    }
}

/// The shard size for a segment of `len` bytes cut into `k` data shards.
pub fn shard_size_for(len: usize, k: usize) -> usize {
    let raw = len.div_ceil(k.max(1)).max(1);
    raw.div_ceil(SHARD_ALIGN) * SHARD_ALIGN
}

/// One encoded segment, borrowing the segment and the encoder's buffers.
pub struct EncodedSegment<'a> {
    /// The data shards that lie wholly inside the segment.
    full: &'a [u8],
    /// The remaining data shards: the segment's tail, then zeros.
    padded: &'a [u8],
    parity: Option<EncoderResult<'a>>,
    k: usize,
    m: usize,
    shard_size: usize,
}

impl EncodedSegment<'_> {
    /// Bytes per shard.
    pub fn shard_size(&self) -> usize {
        self.shard_size
    }

    /// Number of shards, `k + m`.
    pub fn len(&self) -> usize {
        self.k + self.m
    }

    /// Always false: a segment has at least one data shard.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Shard `i`: data shards first, then parity.
    pub fn shard(&self, i: usize) -> &[u8] {
        let s = self.shard_size;
        let full = self.full.len() / s;
        if i < full {
            &self.full[i * s..(i + 1) * s]
        } else if i < self.k {
            &self.padded[(i - full) * s..(i - full + 1) * s]
        } else {
            self.parity
                .as_ref()
                .and_then(|p| p.recovery(i - self.k))
                .unwrap_or_else(|| panic!("shard index {i} out of range"))
        }
    }
}

/// Encodes segments, reusing its buffers from one segment to the next.
#[derive(Default)]
pub struct Encoder {
    rs: Option<ReedSolomonEncoder>,
    padded: Vec<u8>,
}

impl Encoder {
    /// Cuts `segment` into `k` data shards and computes `m` parity shards.
    pub fn encode<'a>(
        &'a mut self,
        segment: &'a [u8],
        k: usize,
        m: usize,
    ) -> Result<EncodedSegment<'a>, CodecError> {
        if segment.is_empty() || k == 0 {
            return Err(CodecError::Parameters(
                "a segment needs at least one byte and one data shard".into(),
            ));
        }
        let s = shard_size_for(segment.len(), k);
        // Shards wholly inside the segment are used in place; the tail and
        // any shards past the end are copied into one zero-padded buffer.
        let full_count = (segment.len() / s).min(k);
        let (full, tail) = segment.split_at(full_count * s);
        self.padded.clear();
        self.padded.extend_from_slice(tail);
        self.padded.resize((k - full_count) * s, 0);

        let parity = if m > 0 {
            let rs = match self.rs.take() {
                Some(mut rs) => {
                    rs.reset(k, m, s)?;
                    rs
                }
                None => ReedSolomonEncoder::new(k, m, s)?,
            };
            let rs = self.rs.insert(rs);
            for chunk in full.chunks_exact(s).chain(self.padded.chunks_exact(s)) {
                rs.add_original_shard(chunk)?;
            }
            Some(rs.encode()?)
        } else {
            None
        };
        Ok(EncodedSegment {
            full,
            padded: &self.padded,
            parity,
            k,
            m,
            shard_size: s,
        })
    }
}

/// Rebuilds segments, reusing the Reed-Solomon decoder's buffers from one
/// segment to the next.
#[derive(Default)]
pub struct Decoder {
    rs: Option<ReedSolomonDecoder>,
}

impl Decoder {
    /// Rebuilds a segment of `len` bytes from whichever shards are present.
    ///
    /// `shards[i]` is shard `i` (data shards first) or `None` when it is
    /// lost. Any `k` present shards suffice.
    pub fn reconstruct(
        &mut self,
        k: usize,
        m: usize,
        shard_size: usize,
        len: usize,
        shards: &[Option<&[u8]>],
    ) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.reconstruct_into(k, m, shard_size, len, shards, &mut out)?;
        Ok(out)
    }

    /// [`Decoder::reconstruct`] into a buffer the caller keeps from one
    /// segment to the next (its old contents are replaced).
    pub fn reconstruct_into(
        &mut self,
        k: usize,
        m: usize,
        shard_size: usize,
        len: usize,
        shards: &[Option<&[u8]>],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        self.with_segment(k, m, shard_size, len, shards, |parts| {
            out.reserve(len);
            for part in parts {
                out.extend_from_slice(part);
            }
        })
    }

    /// Rebuilds a segment without copying it: `f` gets the segment as `k`
    /// consecutive pieces (present shards and restored ones, the last cut
    /// to `len`), borrowed from `shards` and from the decoder.
    pub fn with_segment<R>(
        &mut self,
        k: usize,
        m: usize,
        shard_size: usize,
        len: usize,
        shards: &[Option<&[u8]>],
        f: impl FnOnce(&[&[u8]]) -> R,
    ) -> Result<R, CodecError> {
        check_shards(k, m, shard_size, shards)?;
        if len > k * shard_size {
            return Err(CodecError::Parameters(format!(
                "{len} bytes do not fit {k} shards of {shard_size} bytes"
            )));
        }
        let restored = if shards[..k].iter().all(Option::is_some) {
            None
        } else {
            Some(self.decode(k, m, shard_size, shards)?)
        };
        let mut parts: Vec<&[u8]> = Vec::with_capacity(k);
        let mut left = len;
        for (i, shard) in shards[..k].iter().enumerate() {
            let bytes = match shard {
                Some(bytes) => *bytes,
                None => restored
                    .as_ref()
                    .and_then(|r| r.restored_original(i))
                    .ok_or_else(|| {
                        CodecError::Parameters(format!("data shard {i} was not restored"))
                    })?,
            };
            let take = left.min(bytes.len());
            parts.push(&bytes[..take]);
            left -= take;
        }
        Ok(f(&parts))
    }

    /// Runs the Reed-Solomon decoder over the present shards.
    fn decode(
        &mut self,
        k: usize,
        m: usize,
        shard_size: usize,
        shards: &[Option<&[u8]>],
    ) -> Result<reed_solomon_simd::DecoderResult<'_>, CodecError> {
        let rs = match self.rs.take() {
            Some(mut rs) => {
                rs.reset(k, m, shard_size)?;
                rs
            }
            None => ReedSolomonDecoder::new(k, m, shard_size)?,
        };
        let rs = self.rs.insert(rs);
        for (i, shard) in shards.iter().enumerate() {
            if let Some(bytes) = shard {
                if i < k {
                    rs.add_original_shard(i, bytes)?;
                } else {
                    rs.add_recovery_shard(i - k, bytes)?;
                }
            }
        }
        Ok(rs.decode()?)
    }
}

/// Rebuilds a segment of `len` bytes from whichever shards are present; see
/// [`Decoder::reconstruct`].
pub fn reconstruct(
    k: usize,
    m: usize,
    shard_size: usize,
    len: usize,
    shards: &[Option<&[u8]>],
) -> Result<Vec<u8>, CodecError> {
    Decoder::default().reconstruct(k, m, shard_size, len, shards)
}

/// Regenerates every missing shard (data and parity), returned as
/// `(index, bytes)` in index order.
pub fn repair(
    k: usize,
    m: usize,
    shard_size: usize,
    shards: &[Option<&[u8]>],
) -> Result<Vec<(usize, Vec<u8>)>, CodecError> {
    check_shards(k, m, shard_size, shards)?;
    let missing: Vec<usize> = (0..k + m).filter(|&i| shards[i].is_none()).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    // The whole data part, rebuilt, then its parity encoded afresh.
    let data = Decoder::default().reconstruct(k, m, shard_size, k * shard_size, shards)?;
    let mut rs = ReedSolomonEncoder::new(k, m, shard_size)?;
    for shard in data.chunks_exact(shard_size) {
        rs.add_original_shard(shard)?;
    }
    let encoded = rs.encode()?;
    missing
        .into_iter()
        .map(|i| {
            let bytes = if i < k {
                Some(&data[i * shard_size..(i + 1) * shard_size])
            } else {
                encoded.recovery(i - k)
            };
            bytes
                .map(|b| (i, b.to_vec()))
                .ok_or_else(|| CodecError::Parameters(format!("shard {i} was not produced")))
        })
        .collect()
}

fn check_shards(
    k: usize,
    m: usize,
    shard_size: usize,
    shards: &[Option<&[u8]>],
) -> Result<(), CodecError> {
    if k == 0 || shards.len() != k + m {
        return Err(CodecError::Parameters(format!(
            "{} shards given for k={k}, m={m}",
            shards.len()
        )));
    }
    for (index, shard) in shards.iter().enumerate() {
        if let Some(bytes) = shard
            && bytes.len() != shard_size
        {
            return Err(CodecError::WrongShardSize {
                index,
                len: bytes.len(),
                shard_size,
            });
        }
    }
    let have = shards.iter().filter(|s| s.is_some()).count();
    if have < k {
        return Err(CodecError::NotEnoughShards {
            have,
            need: k,
            total: k + m,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn encode_all(seg: &[u8], k: usize, m: usize) -> (usize, Vec<Vec<u8>>) {
        let mut enc = Encoder::default();
        let e = enc.encode(seg, k, m).unwrap();
        (
            e.shard_size(),
            (0..e.len()).map(|i| e.shard(i).to_vec()).collect(),
        )
    }

    #[test]
    fn data_shards_are_the_segment() {
        let seg = segment(10_000);
        let (size, shards) = encode_all(&seg, 4, 2);
        assert_eq!(size % SHARD_ALIGN, 0);
        let joined: Vec<u8> = shards[..4].concat();
        assert_eq!(&joined[..seg.len()], &seg[..]);
        assert!(joined[seg.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn any_k_shards_rebuild() {
        let seg = segment(100_003);
        let (k, m) = (5, 3);
        let (size, shards) = encode_all(&seg, k, m);
        // Every way of losing m shards, by bit mask.
        for mask in 0u32..(1 << (k + m)) {
            if mask.count_ones() as usize != m {
                continue;
            }
            let view: Vec<Option<&[u8]>> = (0..k + m)
                .map(|i| (mask & (1 << i) == 0).then_some(shards[i].as_slice()))
                .collect();
            assert_eq!(
                reconstruct(k, m, size, seg.len(), &view).unwrap(),
                seg,
                "mask {mask:b}"
            );
        }
    }

    #[test]
    fn one_shard_too_many_lost_is_an_error() {
        let seg = segment(4096);
        let (size, shards) = encode_all(&seg, 4, 2);
        let view: Vec<Option<&[u8]>> = (0..6)
            .map(|i| (i >= 3).then_some(shards[i].as_slice()))
            .collect();
        assert_eq!(
            reconstruct(4, 2, size, seg.len(), &view),
            Err(CodecError::NotEnoughShards {
                have: 3,
                need: 4,
                total: 6
            })
        );
    }

    #[test]
    fn repair_regenerates_lost_shards() {
        let seg = segment(50_000);
        let (size, shards) = encode_all(&seg, 6, 3);
        let view: Vec<Option<&[u8]>> = (0..9)
            .map(|i| (![1, 4, 7].contains(&i)).then_some(shards[i].as_slice()))
            .collect();
        let repaired = repair(6, 3, size, &view).unwrap();
        assert_eq!(repaired.len(), 3);
        for (i, bytes) in repaired {
            assert_eq!(bytes, shards[i], "shard {i}");
        }
    }

    #[test]
    fn tiny_and_parity_free_segments() {
        let seg = segment(3);
        let (size, shards) = encode_all(&seg, 10, 4);
        assert_eq!(shards.len(), 14);
        let view: Vec<Option<&[u8]>> = (0..14)
            .map(|i| (i >= 4).then_some(shards[i].as_slice()))
            .collect();
        assert_eq!(reconstruct(10, 4, size, 3, &view).unwrap(), seg);
        let (size, shards) = encode_all(&seg, 2, 0);
        let view: Vec<Option<&[u8]>> = shards.iter().map(|s| Some(s.as_slice())).collect();
        assert_eq!(reconstruct(2, 0, size, 3, &view).unwrap(), seg);
    }

    #[test]
    fn wrong_shard_size_is_refused() {
        let short = [0u8; 10];
        let view = [Some(&short[..]), None];
        assert!(matches!(
            reconstruct(1, 1, 64, 10, &view),
            Err(CodecError::WrongShardSize { index: 0, .. })
        ));
    }
}
