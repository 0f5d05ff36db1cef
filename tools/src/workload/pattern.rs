//! The bytes a written block carries: derived from its byte offset on the disk and the
//! generation of the write, so that a read can tell a stale, misplaced or torn block from
//! the right one. Generation 0 is the fresh disk: all zeros.

/// Fills `buf` with the pattern of the block at byte `offset`, generation `generation`.
pub fn fill(buf: &mut [u8], offset: u64, generation: u32) {
    if generation == 0 {
        buf.fill(0);
        return;
    }
    for (i, word) in buf.chunks_mut(8).enumerate() {
        let value = word_at(offset + 8 * i as u64, generation).to_le_bytes();
        word.copy_from_slice(&value[..word.len()]);
    }
}

/// The first byte of `buf` that differs from the pattern, if any.
pub fn mismatch(buf: &[u8], offset: u64, generation: u32) -> Option<usize> {
    let mut expected = vec![0; buf.len()];
    fill(&mut expected, offset, generation);
    buf.iter().zip(&expected).position(|(a, b)| a != b)
}

/// splitmix64 of the word's position and generation: every word of the disk differs.
fn word_at(position: u64, generation: u32) -> u64 {
    let mut z = position ^ (u64::from(generation) << 40) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
