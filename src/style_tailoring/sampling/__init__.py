"""Generation: seeded, batched, rank-sharded sampling through a stock diffusers pipeline and a sampler object."""
