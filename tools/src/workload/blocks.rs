//! Which block an operation goes to, and what each block holds: the generation of its last
//! completed write, and whether an operation on it is in flight (never two at once, so that
//! every read knows what it must find).

/// The blocks of the region a workload uses.
#[derive(Debug)]
pub struct Blocks {
    generations: Vec<u32>,
    busy: Vec<bool>,
    next_sequential: usize,
    rng: u64,
}

impl Blocks {
    /// `count` blocks (at least one), all fresh (generation 0), random choices from `seed`.
    pub fn new(count: usize, seed: u64) -> Self {
        Blocks {
            generations: vec![0; count.max(1)],
            busy: vec![false; count.max(1)],
            next_sequential: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// Takes an idle block: the next in order, or a random one; `None` when all are busy.
    pub fn take(&mut self, random: bool) -> Option<usize> {
        let n = self.busy.len();
        let start = if random {
            (self.next_random() % n as u64) as usize
        } else {
            self.next_sequential
        };
        let block = (0..n).map(|i| (start + i) % n).find(|&b| !self.busy[b])?;
        self.busy[block] = true;
        if !random {
            self.next_sequential = (block + 1) % n;
        }
        Some(block)
    }

    /// Gives a block back after its operation completed.
    pub fn release(&mut self, block: usize) {
        self.busy[block] = false;
    }

    /// The generation of the last completed write of `block`.
    pub fn generation(&self, block: usize) -> u32 {
        self.generations[block]
    }

    /// Records a completed write.
    pub fn set_generation(&mut self, block: usize, generation: u32) {
        self.generations[block] = generation;
    }

    /// A coin toss.
    pub fn coin(&mut self) -> bool {
        self.next_random() >> 63 == 1
    }

    /// xorshift64*: cheap, and its output (unlike plain xorshift's low bits) spreads
    /// offsets evenly.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
