"""The counting process in the z-domain: a timeout's wait tables from one eigendecomposition.

The generating function of the counting process of a MAP is
    sum_n P(n, t) z^n = exp((D0 + z D1) t),
and of its time integral, sum_n I(n, t) z^n = int_0^t exp((D0 + z D1) a) da
(Neuts 1979; Lucantoni 1991). On N points of a circle of radius r < 1,
z_k = r e^(-2 pi i k / N), the matrix D0 + z_k D1 = V_k diag(lambda_k) V_k^-1 is
decomposed once per arrival model; then at any t

    exp((D0 + z_k D1) t) = V_k diag(e^(lambda_k t)) V_k^-1,
    its integral         = V_k diag((e^(lambda_k t) - 1) / lambda_k) V_k^-1,

elementwise exponentials over (points, grid, phases), with no stepping in time. The
wait densities of `batching.latency` are convolutions over counts,
sum_{n+m=s} P(n, T-u) D1 P(m, u) 1: in the z-domain they are plain products. One
inverse FFT over k returns the coefficients times r^n, so dividing by r^n gives the
tables. A coefficient beyond N counts folds in with weight r^N (`ALIASING`), and
round-off grows as r^-n; with N >= 2 (K+1) both stay near 1e-10 of the largest
term, far below the grid's own O(du^2) error (tests/unit/test_spectral.py holds the
tables to the time-domain ones).

Where two eigenvalues nearly meet somewhere on the circle, V_k is ill-conditioned
and round-off grows with its condition number: `Spectrum.of` then returns None and
`batching.latency.WindowTables` steps in time instead (`CountingProcess.on_grid`).
"""

from __future__ import annotations

import numpy as np

from .arrivals import MAP

ALIASING = 1e-10  # r^N: the weight with which counts beyond N fold in
BLOCK = 16  # grid steps whose rotations are built from one exact exponential
FLUSH = -300.0  # e^x below this is taken as 0
MAX_CONDITION = 1e3  # of the eigenvectors at any point; above it, step in time


class Spectrum:
    """D0 + z D1 decomposed at z_k = r e^(-2 pi i k / N), k = 0..N/2 (real
    coefficients: the other half are conjugates), for counts 0..counts-1."""

    def __init__(self, arrivals: MAP, counts: int, radius: float, points: int, values: np.ndarray, vectors: np.ndarray) -> None:
        self.arrivals, self.counts, self.radius, self.points = arrivals, counts, radius, points
        n = arrivals.order
        self.lam = values  # (Z, n)
        self.v = vectors  # (Z, n, n): columns are eigenvectors
        self.v_inv = np.linalg.inv(vectors)
        ones, d1 = np.ones(n), arrivals.D1.astype(complex)
        m_t = np.swapaxes(self.v_inv @ d1 @ vectors, 1, 2)  # (V^-1 D1 V)^T
        w_one, w_d1_one = self.v_inv @ ones, self.v_inv @ (d1 @ ones)  # V^-1 1, V^-1 D1 1
        # Tables are (Z, rows, G+1), one row per eigenvalue or phase; matrices act from the left.
        # e^(lambda u) -> [D1 P(m, u) 1 ; D1 P(m, u) D1 1], per eigenvalue a:
        self.ahead = np.swapaxes(np.concatenate([m_t * w_one[:, :, None], m_t * w_d1_one[:, :, None]], axis=2), 1, 2).copy()  # (Z, 2n, n)
        # [P(n, T-u) D1 P(m, u) 1 ; I(n, T-u) D1 P(m, u) D1 1 ; I(n, u) D1 1] -> phase coordinates
        self.back = np.stack([vectors, vectors, vectors * w_d1_one[:, None, :]], axis=1)  # (Z, 3, n, n)
        self.unscale = radius ** -np.arange(counts, dtype=float)

    @classmethod
    def of(cls, arrivals: MAP, counts: int, max_condition: float = MAX_CONDITION) -> Spectrum | None:
        """The decomposition for counts 0..counts-1, or None where it is ill-conditioned."""
        points = max(16, 1 << (2 * counts - 1).bit_length())
        radius = ALIASING ** (1.0 / points)
        z = radius * np.exp(-2j * np.pi * np.arange(points // 2 + 1) / points)
        matrices = arrivals.D0[None] + z[:, None, None] * arrivals.D1[None]
        values, vectors = np.linalg.eig(matrices)
        if not np.isfinite(values).all():
            return None
        spectrum = cls(arrivals, counts, radius, points, values, vectors)
        # ||V|| ||V^-1|| in the Frobenius norm bounds the condition number from above
        condition = np.linalg.norm(vectors, axis=(1, 2)) * np.linalg.norm(spectrum.v_inv, axis=(1, 2))
        return spectrum if np.isfinite(condition).all() and condition.max() <= max_condition else None

    def coefficients(self, transform: np.ndarray) -> np.ndarray:
        """(..., Z) values on the circle -> (..., counts) coefficients. Every table here
        is of probabilities, integrals or densities: round-off below 0 is cut to 0."""
        out = np.fft.irfft(transform, self.points, axis=-1)[..., : self.counts] * self.unscale
        return np.maximum(out, 0.0, out=out)

    def exponentials(self, timeout_s: float, grid: int) -> np.ndarray:
        """[e^(lambda u) ; (e^(lambda u) - 1) / lambda] at u = g T / grid, (Z, 2n, G+1).
        e^(iy) - 1 for y = Y + y' (Y = BLOCK j du, y' = k du, per eigenvalue) is
        e^(iY) (e^(iy') - 1) + (e^(iY) - 1): exact to a few roundings, with no
        cancellation where y is small, from few complex exponentials (a running product
        would drift by one rounding per step, which r^-n amplifies). Then
        e^(x + iy) - 1 = (e^(iy) - 1) e^x + (e^x - 1), exact also where x + iy is small."""
        lam, du = self.lam, timeout_s / grid
        points, n = lam.shape
        blocks = -(-(grid + 1) // BLOCK)
        coarse = np.expm1(1j * lam.imag[:, :, None] * (BLOCK * du * np.arange(blocks)))[:, :, :, None]
        fine = np.expm1(1j * lam.imag[:, :, None] * (du * np.arange(BLOCK)))[:, :, None, :]
        turn = ((coarse + 1.0) * fine + coarse).reshape(points, n, blocks * BLOCK)[:, :, : grid + 1]  # e^(iy) - 1
        x = lam.real[:, :, None] * np.linspace(0.0, timeout_s, grid + 1)
        x[x < FLUSH] = -np.inf  # e^x below 1e-130: 0, so that products never reach subnormals
        grow = np.exp(x)
        turn *= grow
        out = np.empty((points, 2 * n, grid + 1), dtype=complex)
        np.add(turn, grow, out=out[:, :n])
        np.add(turn, np.expm1(x), out=out[:, n:])
        out[:, n:] *= (1.0 / np.where(lam == 0, 1.0, lam))[:, :, None]
        for z, a in zip(*np.nonzero(lam == 0)):  # a phase that never leaves, without arrivals
            out[z, n + a] = np.linspace(0.0, timeout_s, grid + 1)
        return out

    def window(self, timeout_s: float, grid: int) -> dict[str, np.ndarray]:
        """The tables of `batching.latency.WindowTables` for one timeout, on its grid
        u = g T / grid: P(n, T), I(n, T), the timeout and fill densities per opening
        phase, and the filled batch opener's exact cumulative wait."""
        n = self.arrivals.order
        both = self.exponentials(timeout_s, grid)  # [P(., u) ; I(., u)] in eigen-coordinates
        rows = np.empty((len(both), 3 * n, grid + 1), dtype=complex)
        np.multiply(both[:, :, ::-1], self.ahead @ both[:, :n], out=rows[:, : 2 * n])  # P(n, T-u), I(n, T-u) times
        rows[:, 2 * n :] = both[:, n:]
        rows = self.back @ rows.reshape(len(both), 3, n, grid + 1)  # (Z, 3, i, G+1)
        rows = np.ascontiguousarray(rows.reshape(len(both), 3 * n, grid + 1).transpose(1, 2, 0))  # (3n, G+1, Z)
        tables = self.coefficients(rows)  # (3n, G+1, counts)
        ends = (self.v[:, None] * both[:, :, -1].reshape(-1, 2, 1, n)) @ self.v_inv[:, None]  # P(., T), I(., T): (Z, 2, i, j)
        ends = self.coefficients(np.ascontiguousarray(ends.transpose(1, 2, 3, 0)))  # (2, i, j, counts)
        return {"timeout_dens": tables[:n], "fill_dens": tables[n : 2 * n], "opener_cum": tables[2 * n :].transpose(1, 2, 0),
                "p_T": ends[0].transpose(2, 0, 1), "i_T": ends[1].transpose(2, 0, 1)}  # fmt: skip

    def on_grid(self, timeout_s: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
        """P(n, u) and I(n, u) at every grid point, (G+1, counts, n, n), as
        `CountingProcess.on_grid` gives them (only the capped law needs them)."""
        n, points = self.arrivals.order, len(self.lam)
        both = self.exponentials(timeout_s, grid).reshape(points, 2, n, grid + 1).transpose(0, 1, 3, 2)  # (Z, 2, G+1, a)
        pairs = (self.v[:, None, None] * both[:, :, :, None, :]) @ self.v_inv[:, None, None]  # (Z, 2, G+1, i, j)
        tables = self.coefficients(np.ascontiguousarray(pairs.transpose(1, 2, 3, 4, 0)))  # (2, G+1, i, j, counts)
        return (np.ascontiguousarray(tables[0].transpose(0, 3, 1, 2)),
                np.ascontiguousarray(tables[1].transpose(0, 3, 1, 2)))  # fmt: skip
