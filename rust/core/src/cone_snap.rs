//! The projection onto the product cone and the limit scaling `H` at a snapped pair, for the
//! native Newton steps (newton_steps.rs), on zero, nonneg, SOC and exp cones, SCS row order.
//!
//! The same conventions and formulas as the Python cone classes, which are the reference
//! (pounce_kkt/cones/: `nonneg.py`, `soc.py`, `exp.py`, `ray.py`, `barrier.py`,
//! `centring.py`; pounce_kkt/active_set.py `limit_scaling`):
//! - `Pi_K(w)`: 0 on zero rows, `max(w, 0)` on nonneg rows; an SOC block `(t, v)` is `w` when
//!   `|v| <= t`, 0 when `|v| <= -t`, else `(t + |v|)/2 (1, v/|v|)`; an exp block `(x, y, z)`
//!   (`y e^(x/y) <= z`) has the closed forms of `exp_projection` (in K, in the polar cone, the
//!   face `x <= 0, y <= 0`) and otherwise `t g(rho)` on the boundary ray `g(r) = (r, 1, e^r)`,
//!   rho the root of Friberg's univariate equation by safeguarded Newton (`exp_ray_root`).
//! - `H` at a snapped pair `(s, y) = (Pi_K(w), Pi_K(w) - w)`: zero rows 0, nonneg rows
//!   [`INACTIVE_H`] where `w > 0` and 0 elsewhere; an SOC block the Nesterov-Todd scaling of
//!   the recentred central pair (`soc_scaling`); an exp block `(mu hess f(s~))^-1` of the
//!   log barrier at `s` pushed just inside the cone (`exp_scaling`).
//!
//! The Python module stays the implementation for PSD and power cones, CUDA tensors and
//! the dense backward path; tests/test_native_newton.py holds the two to the same answers.
use crate::cone_layout::ConeLayout;

/// H of an inactive nonneg row (w_i > 0): "infinite", exactly representable in a diagonal
/// (pounce_kkt/active_set.py `INACTIVE_H`).
pub const INACTIVE_H: f64 = 1e20;
/// centring.py `TAU_FLOOR` and `TAU_REL_MIXED`.
const TAU_FLOOR: f64 = 1e-20;
const TAU_REL_MIXED: f64 = 1e-8;
/// ray.py `KINK_REL`.
const KINK_REL: f64 = 1e-12;
/// exp.py `ROOT_STEPS` and `_BRACKET_DOUBLINGS`.
const ROOT_STEPS: usize = 100;
const BRACKET_DOUBLINGS: usize = 64;

/// The kind of one dense block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Soc,
    Exp,
}

/// The cones of one structure as the snap sees them: the zero and nonneg rows, then each
/// dense block (kind, first row, rows) in SCS order; `None` from [`SnapCones::new`] when a
/// PSD or power cone is present.
#[derive(Debug, Clone)]
pub struct SnapCones {
    pub z: usize,
    pub n_diag: usize,
    pub blocks: Vec<(BlockKind, usize, usize)>,
}

impl SnapCones {
    pub fn new(layout: &ConeLayout) -> Option<Self> {
        let mut blocks = Vec::new();
        for r in &layout.product.ranges {
            let kind = match r.cone.key() {
                "z" | "l" => continue,
                "q" => BlockKind::Soc,
                "ep" => BlockKind::Exp,
                _ => return None,
            };
            blocks.push((kind, r.start, r.rows));
        }
        Some(SnapCones {
            z: layout.dims.z,
            n_diag: layout.h_diag_len(),
            blocks,
        })
    }

    /// `p = Pi_K(w)` (p and w of length m).
    pub fn project(&self, w: &[f64], p: &mut [f64]) {
        p[..self.z].iter_mut().for_each(|v| *v = 0.0);
        for (pi, &wi) in p[self.z..self.n_diag]
            .iter_mut()
            .zip(&w[self.z..self.n_diag])
        {
            // NaN stays NaN (a trial point with one is then rejected).
            *pi = if wi > 0.0 || wi.is_nan() { wi } else { 0.0 };
        }
        for &(kind, start, d) in &self.blocks {
            let (wb, pb) = (&w[start..start + d], &mut p[start..start + d]);
            match kind {
                BlockKind::Soc => soc_project(wb, pb),
                BlockKind::Exp => exp_project(wb, pb),
            }
        }
    }

    /// `H` at the snapped pair of (s, y): [`Self::limit_scaling`] at `(Pi_K(w), Pi_K(w) - w)`,
    /// `w = s - y` (pounce_kkt/active_set.py `limit_scaling`).
    pub fn scaling_at_snap(&self, s: &[f64], y: &[f64], h_diag: &mut [f64], h_blocks: &mut [f64]) {
        let w: Vec<f64> = s.iter().zip(y).map(|(s, y)| s - y).collect();
        let mut p = vec![0.0; w.len()];
        self.project(&w, &mut p);
        let d: Vec<f64> = p.iter().zip(&w).map(|(p, w)| p - w).collect();
        self.limit_scaling(&p, &d, h_diag, h_blocks);
    }

    /// `H` at the snapped pair (s, y): `h_diag` (n_diag) and `h_blocks` (each block dense
    /// row-major, in order), the adjoint's compact layout.
    pub fn limit_scaling(&self, s: &[f64], y: &[f64], h_diag: &mut [f64], h_blocks: &mut [f64]) {
        h_diag[..self.z].iter_mut().for_each(|v| *v = 0.0);
        for i in self.z..self.n_diag {
            h_diag[i] = if s[i] - y[i] > 0.0 { INACTIVE_H } else { 0.0 };
        }
        let mut off = 0;
        for &(kind, start, d) in &self.blocks {
            let (sb, yb) = (&s[start..start + d], &y[start..start + d]);
            let hb = &mut h_blocks[off..off + d * d];
            match kind {
                BlockKind::Soc => soc_scaling(sb, yb, hb),
                BlockKind::Exp => exp_scaling(sb, yb, hb),
            }
            off += d * d;
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---------------------------------------------------------------------------------- SOC

fn soc_project(w: &[f64], p: &mut [f64]) {
    let t = w[0];
    let a = dot(&w[1..], &w[1..]).sqrt();
    if a <= -t {
        p.iter_mut().for_each(|v| *v = 0.0);
    } else if a <= t {
        p.copy_from_slice(w);
    } else {
        let c = 0.5 * (t + a);
        let inv = 1.0 / a.max(1e-300);
        p[0] = c;
        for (pi, &wi) in p[1..].iter_mut().zip(&w[1..]) {
            *pi = c * wi * inv;
        }
    }
}

/// soc.py `soc_scaling` at (s, y): NT of the recentred pair in the Jordan frame of
/// `w = s - y` (centring.py `tau`, `tau_rel`, `log_nt_ratio`; rank 1).
fn soc_scaling(s: &[f64], y: &[f64], h: &mut [f64]) {
    let d = s.len();
    let w: Vec<f64> = s.iter().zip(y).map(|(a, b)| a - b).collect();
    let w0 = w[0];
    let a = dot(&w[1..], &w[1..]).max(1e-300).sqrt();
    let (lmin, lmax) = (w0 - a, w0 + a);
    let rel = if lmin < 0.0 && lmax > 0.0 {
        TAU_REL_MIXED
    } else {
        TAU_FLOOR
    };
    let tau = dot(s, y).max(rel * dot(&w, &w)) + TAU_FLOOR;
    let l1 = 2.0 * (lmax / (2.0 * tau.sqrt())).asinh();
    let l2 = 2.0 * (lmin / (2.0 * tau.sqrt())).asinh();
    let (r1, r2, rt) = (l1.exp(), l2.exp(), (0.5 * (l1 + l2)).exp());
    let plus = 0.5 * (r1 + r2) - rt;
    let minus = 0.5 * (r1 - r2);
    h[0] = 0.5 * (r1 + r2);
    for j in 1..d {
        let uj = w[j] / a;
        h[j] = minus * uj;
        h[j * d] = minus * uj;
        for i in 1..d {
            let ui = w[i] / a;
            h[i * d + j] = plus * ui * uj + if i == j { rt } else { 0.0 };
        }
    }
}

// ---------------------------------------------------------------------------------- exp

/// exp.py `exp_cases` and `exp_projection` (without the derivative) on one row.
fn exp_project(w: &[f64], p: &mut [f64]) {
    let (x, y, z) = (w[0], w[1], w[2]);
    let in_k = (y > 0.0 && z > 0.0 && x <= y * (z / y).ln()) || (x <= 0.0 && y == 0.0 && z >= 0.0);
    let in_polar = (x > 0.0 && z < 0.0 && y <= x * (1.0 + (-z / x).ln()))
        || (x == 0.0 && y <= 0.0 && z <= 0.0);
    if in_k {
        p.copy_from_slice(w);
        return;
    }
    if in_polar {
        p.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    if x <= 0.0 && y <= 0.0 {
        p.copy_from_slice(&[x, 0.0, z.max(0.0)]);
        return;
    }
    let n = (x * x + y * y + z * z).sqrt();
    let u = [x / n, y / n, z / n];
    let r = exp_ray_root(u);
    // g(r) = e^-max(r, 0) (r, 1, e^r), t = <g, u> / |g|^2 (ray.py `ray_projection_np`).
    let g = if r < 0.0 {
        [r, 1.0, r.exp()]
    } else {
        let e = (-r).exp();
        [r * e, e, 1.0]
    };
    let gg = dot(&g, &g);
    let t = dot(&g, &u) / gg;
    let pu = [t * g[0], t * g[1], t * g[2]];
    let e = [pu[0] - u[0], pu[1] - u[1], pu[2] - u[2]];
    let nu = dot(&u, &u).sqrt();
    if dot(&e, &e).sqrt() <= KINK_REL * nu {
        p.copy_from_slice(w);
    } else if t * gg.sqrt() > KINK_REL * nu {
        for k in 0..3 {
            p[k] = pu[k] * n;
        }
    } else {
        p.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// e^-|r| F(r) and its derivative (exp.py `_root_function`).
fn root_function(r: f64, x: f64, y: f64, z: f64) -> (f64, f64) {
    let a = r.abs();
    let (ep, em, e0) = ((r - a).exp(), (-r - a).exp(), (-a).exp());
    let f = ((r - 1.0) * x + y) * ep - (x - r * y) * em - (r * r - r + 1.0) * z * e0;
    let df = (r * x + y) * ep + (x + (1.0 - r) * y) * em
        - (2.0 * r - 1.0) * z * e0
        - if r >= 0.0 { f } else { -f };
    (f, df)
}

/// exp.py `exp_ray_root` on one unit row (no start guess): the bracket's free end by
/// doubling, then safeguarded Newton (rtsafe's rule with the jump to a bracket end).
fn exp_ray_root(u: [f64; 3]) -> f64 {
    let [x, y, z] = u;
    let mut lo = if x > 0.0 {
        1.0 - y / x
    } else {
        f64::NEG_INFINITY
    };
    let mut hi = if y > 0.0 { x / y } else { f64::INFINITY };
    if hi.is_infinite() {
        let (mut base, mut d) = (lo, 1.0);
        for _ in 0..BRACKET_DOUBLINGS {
            let c = base + d;
            if root_function(c, x, y, z).0 > 0.0 {
                hi = c;
                break;
            }
            base = c;
            lo = c;
            d *= 2.0;
        }
    }
    if lo.is_infinite() {
        let (mut base, mut d) = (hi, 1.0);
        for _ in 0..BRACKET_DOUBLINGS {
            let c = base - d;
            if root_function(c, x, y, z).0 < 0.0 {
                lo = c;
                break;
            }
            base = c;
            hi = c;
            d *= 2.0;
        }
    }
    let mut r = 0.5 * (lo + hi);
    let mut last = hi - lo;
    let mut jumped = false;
    for _ in 0..ROOT_STEPS {
        let (f, df) = root_function(r, x, y, z);
        if f < 0.0 {
            lo = r;
        }
        if f > 0.0 {
            hi = r;
        }
        let dx = f / df;
        let step = r - dx;
        let inside = step.is_finite() && step > lo && step < hi;
        let ok = inside && 2.0 * dx.abs() <= last.abs();
        let scale = 1.0 + r.abs();
        let tiny = f == 0.0 || dx.abs() <= 1e-9 * scale;
        let end = if step >= hi { hi } else { lo };
        let jump = !inside && step.is_finite() && r != end && !jumped;
        jumped = jump;
        let new = if ok || (tiny && inside) {
            step
        } else if tiny {
            r
        } else if jump {
            end
        } else {
            0.5 * (lo + hi)
        };
        let done = tiny || hi - lo <= 4e-16 * scale;
        last = (new - r).abs();
        r = new;
        if done {
            break;
        }
    }
    r
}

/// exp.py `exp_interior` on one row.
fn exp_interior(s: [f64; 3]) -> bool {
    let [x, y, z] = s;
    y > 0.0 && z > 0.0 && y * (z / y).ln() - x > 0.0
}

/// barrier.py `PUSH_LADDER`: 1e-8, 1e-7, ..., 1e-2.
const PUSH_LADDER: [f64; 7] = [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2];

/// exp.py `_exp_scaling` on one block: barrier.py `push_inside` along e = (-1, 1, 1), the
/// barrier's gradient there and `exp_hess_inv` in closed form, then `barrier_scaling`.
fn exp_scaling(s: &[f64], y: &[f64], h: &mut [f64]) {
    const E: [f64; 3] = [-1.0, 1.0, 1.0];
    let scale = 1.0 + dot(s, s).sqrt() + dot(y, y).sqrt();
    let at = |delta: f64| {
        [
            s[0] + delta * E[0],
            s[1] + delta * E[1],
            s[2] + delta * E[2],
        ]
    };
    let delta = if exp_interior(at(-PUSH_LADDER[0] * scale)) {
        0.0
    } else {
        PUSH_LADDER
            .iter()
            .map(|r| r * scale)
            .find(|&push| exp_interior(at(push)))
            .unwrap_or(PUSH_LADDER[PUSH_LADDER.len() - 1] * scale)
    };
    let st = at(delta);
    let [x, yt, z] = st;
    let log_zy = (z / yt).ln();
    let psi = yt * log_zy - x;
    let grad = [
        1.0 / psi,
        -(log_zy - 1.0) / psi - 1.0 / yt,
        -(yt / z) / psi - 1.0 / z,
    ];
    // exp_hess_inv: [[psi^2 + a'Da, (Da)'], [Da, Dinv]], Dinv = E - E v v' E / (y psi + v'Ev).
    let a = [log_zy - 1.0, yt / z];
    let e = [yt * yt, z * z];
    let v = [1.0, -yt / z];
    let ev = [e[0] * v[0], e[1] * v[1]];
    let c = yt * psi + v[0] * ev[0] + v[1] * ev[1];
    let dinv = [
        [e[0] - ev[0] * ev[0] / c, -ev[0] * ev[1] / c],
        [-ev[1] * ev[0] / c, e[1] - ev[1] * ev[1] / c],
    ];
    let da = [
        dinv[0][0] * a[0] + dinv[0][1] * a[1],
        dinv[1][0] * a[0] + dinv[1][1] * a[1],
    ];
    let hinv = [
        [psi * psi + a[0] * da[0] + a[1] * da[1], da[0], da[1]],
        [da[0], dinv[0][0], dinv[0][1]],
        [da[1], dinv[1][0], dinv[1][1]],
    ];
    // barrier_scaling: mu = |y| / |grad| + TAU_FLOOR (1 + |s~|^2) / 3, H = hinv / mu, symmetric.
    let mu = dot(y, y).sqrt() / dot(&grad, &grad).sqrt() + TAU_FLOOR * (1.0 + dot(&st, &st)) / 3.0;
    for i in 0..3 {
        for j in 0..3 {
            h[i * 3 + j] = 0.5 * (hinv[i][j] + hinv[j][i]) / mu;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_projection_is_a_moreau_decomposition() {
        // Pi(w) in K, Pi(w) - w in K* (SCS's dual exp cone), <Pi(w), Pi(w) - w> = 0, on rows
        // of every case: the smooth boundary, in K, in the polar cone, the face.
        let rows = [
            [1.0, 1.0, 1.0],
            [0.3, -2.0, 0.5],
            [-1.0, 2.0, 0.1],
            [2.0, 0.5, -3.0],
            [-1.0, -1.0, 2.0],
            [0.0, 1.0, 3.0],
            [5.0, 0.1, 0.2],
            [-3.0, 0.2, -0.1],
        ];
        for w in rows {
            let mut p = [0.0; 3];
            exp_project(&w, &mut p);
            let d = [p[0] - w[0], p[1] - w[1], p[2] - w[2]];
            let n = dot(&w, &w).sqrt();
            assert!(
                dot(&p, &d).abs() <= 1e-12 * n * n,
                "{w:?}: <p, d> = {}",
                dot(&p, &d)
            );
            // p in K: y e^(x/y) <= z (or the y = 0 face: x <= 0, z >= 0).
            let in_k = if p[1] > 1e-14 * n {
                p[1] * (p[0] / p[1]).exp() <= p[2] + 1e-12 * n
            } else {
                p[0] <= 1e-12 * n && p[2] >= -1e-12 * n
            };
            assert!(in_k, "{w:?} -> {p:?}");
            // d in K*: -u e^(v/u) <= e w with u < 0 (or u = 0: v >= 0, w >= 0).
            // (relative: near the edge u -> 0 the left side is 1e-8 times e^16, d_1 / d_0 carrying
            // rounding amplified 16-fold; the Python projection gives the same d)
            let in_dual = if d[0] < -1e-14 * n {
                let lhs = -d[0] * (d[1] / d[0]).exp();
                lhs <= std::f64::consts::E * d[2] * (1.0 + 1e-6) + 1e-12 * n
            } else {
                d[0].abs() <= 1e-12 * n && d[1] >= -1e-12 * n && d[2] >= -1e-12 * n
            };
            assert!(in_dual, "{w:?} -> d = {d:?}");
        }
    }

    #[test]
    fn soc_projection_and_scaling_at_a_snapped_pair() {
        let w = [0.5, 1.0, -2.0];
        let mut p = [0.0; 3];
        soc_project(&w, &mut p);
        let a = 5.0_f64.sqrt();
        assert!((p[0] - 0.5 * (0.5 + a)).abs() < 1e-15);
        assert!((p[1] * p[1] + p[2] * p[2]).sqrt() - p[0] < 1e-15);
        let d: Vec<f64> = p.iter().zip(&w).map(|(a, b)| a - b).collect();
        let mut h = [0.0; 9];
        soc_scaling(&p, &d, &mut h);
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(h[i * 3 + j], h[j * 3 + i]);
            }
        }
        let mul =
            |v: &[f64]| -> Vec<f64> { (0..3).map(|i| dot(&h[i * 3..i * 3 + 3], v)).collect() };
        // The limit: ~0 on the dual's direction d, ~infinite on p's, and lam_1 / |lam_2| on
        // the tangent direction orthogonal to both (the finite curvature of the face).
        let hd = mul(&d);
        assert!(
            dot(&hd, &hd).sqrt() <= 1e-6 * dot(&d, &d).sqrt(),
            "H d = {hd:?}"
        );
        assert!(dot(&p, &mul(&p)) >= 1e6 * dot(&p, &p));
        let tan = [0.0, 2.0 / a, 1.0 / a]; // (0, -w2, w1) / |v|
        let (l1, l2) = (0.5 + a, 0.5 - a);
        let ht = mul(&tan);
        for i in 0..3 {
            assert!((ht[i] - l1 / l2.abs() * tan[i]).abs() <= 1e-6, "{ht:?}");
        }
    }
}
