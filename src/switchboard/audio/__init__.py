"""Pure audio helpers: G.711 μ-law and framing. No I/O."""
