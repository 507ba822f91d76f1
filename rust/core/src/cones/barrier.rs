//! The log-barrier scaling of the non-symmetric cones (exp, power): the push inside the
//! cone and `H = (mu hess f(s~))^-1` (pounce_kkt/cones/barrier.py), and the small dense
//! algebra it needs.
use super::centring::TAU_FLOOR;
use super::dot;

/// barrier.py `PUSH_LADDER`: 1e-8, 1e-7, ..., 1e-2.
const PUSH_LADDER: [f64; 7] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2];

/// barrier.py `push_inside` on one 3-row block: s itself when `s - 1e-8 scale e` is still
/// interior, else `s + delta e` with the first rung of the ladder (x scale) that is
/// interior (the last where none is); scale = 1 + |s| + |y|.
pub(crate) fn push_inside(
    s: &[f64],
    y: &[f64],
    e: [f64; 3],
    inside: impl Fn([f64; 3]) -> bool,
) -> [f64; 3] {
    let scale = 1.0 + dot(s, s).sqrt() + dot(y, y).sqrt();
    let at = |delta: f64| {
        [
            s[0] + delta * e[0],
            s[1] + delta * e[1],
            s[2] + delta * e[2],
        ]
    };
    let delta = if inside(at(-PUSH_LADDER[0] * scale)) {
        0.0
    } else {
        PUSH_LADDER
            .iter()
            .map(|r| r * scale)
            .find(|&push| inside(at(push)))
            .unwrap_or(PUSH_LADDER[PUSH_LADDER.len() - 1] * scale)
    };
    at(delta)
}

/// barrier.py `barrier_scaling`: H = hinv / mu, mu = |y| / |grad| + TAU_FLOOR (1 + |s~|^2)
/// / 3, symmetrised.
pub(crate) fn barrier_scaling(
    st: &[f64; 3],
    y: &[f64],
    grad: &[f64; 3],
    hinv: &[[f64; 3]; 3],
    h: &mut [f64],
) {
    let mu = dot(y, y).sqrt() / dot(grad, grad).sqrt() + TAU_FLOOR * (1.0 + dot(st, st)) / 3.0;
    for i in 0..3 {
        for j in 0..3 {
            h[i * 3 + j] = 0.5 * (hinv[i][j] + hinv[j][i]) / mu;
        }
    }
}

/// `(M + u u' / c)^-1` from `M^-1` (barrier.py `sherman_morrison`).
pub(crate) fn sherman_morrison(minv: &[[f64; 3]; 3], u: &[f64; 3], c: f64) -> [[f64; 3]; 3] {
    let mu = [dot(&minv[0], u), dot(&minv[1], u), dot(&minv[2], u)];
    let den = c + dot(u, &mu);
    let mut out = *minv;
    for i in 0..3 {
        for j in 0..3 {
            out[i][j] -= mu[i] * mu[j] / den;
        }
    }
    out
}

/// The inverse of a 3 x 3 matrix by cofactors.
pub(crate) fn inv3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let cof = |i: usize, j: usize| {
        let (r0, r1) = ((i + 1) % 3, (i + 2) % 3);
        let (c0, c1) = ((j + 1) % 3, (j + 2) % 3);
        m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0]
    };
    let det = m[0][0] * cof(0, 0) + m[0][1] * cof(0, 1) + m[0][2] * cof(0, 2);
    let mut out = [[0.0; 3]; 3];
    for i in 0..3 {
        for (j, row) in out.iter_mut().enumerate() {
            row[i] = cof(i, j) / det;
        }
    }
    out
}
