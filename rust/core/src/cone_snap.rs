//! The projection onto the product cone and the limit scaling `H` at a snapped pair, for the
//! native Newton steps (newton_steps.rs) and the adjoint's H from `s` (the binding's
//! `ConicProblem.adjoint(..., s=)`), every SCS cone, SCS row order.
//!
//! The same conventions and formulas as the Python cone classes, which are the reference
//! (pounce_kkt/cones/: `nonneg.py`, `soc.py`, `psd.py`, `exp.py`, `power.py`, `ray.py`,
//! `barrier.py`, `centring.py`; pounce_kkt/active_set.py `limit_scaling`):
//! - `Pi_K(w)`: 0 on zero rows, `max(w, 0)` on nonneg rows; an SOC block `(t, v)` is `w` when
//!   `|v| <= t`, 0 when `|v| <= -t`, else `(t + |v|)/2 (1, v/|v|)`; a PSD block (svec: lower
//!   triangle, column-major, off-diagonals x sqrt 2) is `svec(Q diag(max(lam, 0)) Q')`
//!   (eigenvalues by cyclic Jacobi); an exp block `(x, y, z)` (`y e^(x/y) <= z`) has the
//!   closed forms of `exp_projection` (in K, in the polar cone, the face `x <= 0, y <= 0`)
//!   and otherwise `t g(rho)` on the boundary ray `g(r) = (r, 1, e^r)`, rho the root of
//!   Friberg's univariate equation by safeguarded Newton (`exp_ray_root`); a power block
//!   (`x^a y^(1-a) >= |z|`) its closed forms (in K, polar, `z = 0`) and otherwise `t g(u*)`
//!   on its ray `(e^((1-a)u), e^(-a u), sign z)`, u* by ray.py's grid and safeguarded Newton.
//! - `H` at a snapped pair `(s, y) = (Pi_K(w), Pi_K(w) - w)`: zero rows 0, nonneg rows
//!   [`INACTIVE_H`] where `w > 0` and 0 elsewhere; SOC and PSD blocks the Nesterov-Todd
//!   scaling of the recentred central pair (`soc_scaling`, `psd_scaling`); exp and power
//!   blocks `(mu hess f(s~))^-1` of the log barrier at `s` pushed just inside the cone
//!   (`exp_scaling`, `power_scaling`).
//!
//! The Python classes stay the implementation for CUDA tensors and the dense (Torch)
//! backward path; tests/test_native_newton.py holds the two to the same answers.
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
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockKind {
    Soc,
    /// A PSD block of this order (svec rows: lower triangle, column-major, x sqrt 2).
    Psd(usize),
    Exp,
    /// A power cone with this alpha.
    Power(f64),
}

/// The cones of one structure as the snap sees them: the zero and nonneg rows, then each
/// dense block (kind, first row, rows) in SCS order.
#[derive(Debug, Clone)]
pub struct SnapCones {
    pub z: usize,
    pub n_diag: usize,
    pub blocks: Vec<(BlockKind, usize, usize)>,
}

impl SnapCones {
    pub fn new(layout: &ConeLayout) -> Self {
        let mut blocks = Vec::new();
        let (mut orders, mut alphas) = (layout.dims.s.iter(), layout.dims.p.iter());
        for r in &layout.product.ranges {
            let kind = match r.cone.key() {
                "z" | "l" => continue,
                "q" => BlockKind::Soc,
                "s" => BlockKind::Psd(*orders.next().expect("one order per PSD cone")),
                "ep" => BlockKind::Exp,
                "p" => BlockKind::Power(*alphas.next().expect("one alpha per power cone")),
                key => unreachable!("no cone {key:?} in a ProductCone"),
            };
            blocks.push((kind, r.start, r.rows));
        }
        SnapCones {
            z: layout.dims.z,
            n_diag: layout.h_diag_len(),
            blocks,
        }
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
                BlockKind::Psd(k) => psd_project(wb, k, pb),
                BlockKind::Exp => exp_project(wb, pb),
                BlockKind::Power(a) => power_project(wb, a, pb),
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
                BlockKind::Psd(k) => psd_scaling(sb, yb, k, hb),
                BlockKind::Exp => exp_scaling(sb, yb, hb),
                BlockKind::Power(a) => power_scaling(sb, yb, a, hb),
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
    let st = push_inside(s, y, [-1.0, 1.0, 1.0], exp_interior);
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
    barrier_scaling(&st, y, &grad, &hinv, h);
}

/// barrier.py `push_inside` on one 3-row block: s itself when `s - 1e-8 scale e` is still
/// interior, else `s + delta e` with the first rung of the ladder (x scale) that is
/// interior (the last where none is); scale = 1 + |s| + |y|.
fn push_inside(s: &[f64], y: &[f64], e: [f64; 3], inside: impl Fn([f64; 3]) -> bool) -> [f64; 3] {
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
fn barrier_scaling(st: &[f64; 3], y: &[f64], grad: &[f64; 3], hinv: &[[f64; 3]; 3], h: &mut [f64]) {
    let mu = dot(y, y).sqrt() / dot(grad, grad).sqrt() + TAU_FLOOR * (1.0 + dot(st, st)) / 3.0;
    for i in 0..3 {
        for j in 0..3 {
            h[i * 3 + j] = 0.5 * (hinv[i][j] + hinv[j][i]) / mu;
        }
    }
}

// ---------------------------------------------------------------------------------- PSD

/// The svec entries (row, column) of an order-k block: lower triangle, column-major.
fn svec_entries(k: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..k).flat_map(move |j| (j..k).map(move |i| (i, j)))
}

/// smat of an svec (k x k, row-major, symmetric).
fn smat(v: &[f64], k: usize) -> Vec<f64> {
    let mut m = vec![0.0; k * k];
    for ((i, j), &x) in svec_entries(k).zip(v) {
        let x = if i == j {
            x
        } else {
            x / std::f64::consts::SQRT_2
        };
        m[i * k + j] = x;
        m[j * k + i] = x;
    }
    m
}

/// svec of a symmetric k x k matrix (row-major).
fn svec(m: &[f64], k: usize, out: &mut [f64]) {
    for ((i, j), o) in svec_entries(k).zip(out.iter_mut()) {
        *o = if i == j {
            m[i * k + j]
        } else {
            std::f64::consts::SQRT_2 * m[i * k + j]
        };
    }
}

/// Eigenvalues and eigenvectors of a symmetric k x k matrix (row-major) by cyclic Jacobi
/// rotations: `(lam, q)`, `q` row-major with column i the eigenvector of `lam[i]`.
fn sym_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut q = vec![0.0; k * k];
    for i in 0..k {
        q[i * k + i] = 1.0;
    }
    let total: f64 = a.iter().map(|v| v * v).sum();
    for _ in 0..64 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum();
        if off <= 1e-34 * total {
            break;
        }
        for p in 0..k {
            for r in p + 1..k {
                let apr = a[p * k + r];
                if apr == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][r]: tan of its angle, the smaller root.
                let theta = (a[r * k + r] - a[p * k + p]) / (2.0 * apr);
                let t = if theta == 0.0 {
                    1.0
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * c;
                for i in 0..k {
                    let (aip, air) = (a[i * k + p], a[i * k + r]);
                    a[i * k + p] = c * aip - sn * air;
                    a[i * k + r] = sn * aip + c * air;
                }
                for j in 0..k {
                    let (apj, arj) = (a[p * k + j], a[r * k + j]);
                    a[p * k + j] = c * apj - sn * arj;
                    a[r * k + j] = sn * apj + c * arj;
                }
                for i in 0..k {
                    let (qip, qir) = (q[i * k + p], q[i * k + r]);
                    q[i * k + p] = c * qip - sn * qir;
                    q[i * k + r] = sn * qip + c * qir;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), q)
}

/// `Q diag(f) Q'` (row-major) from eigenvectors `q` (columns) and weights `f`.
fn from_eigen(q: &[f64], f: &[f64], k: usize) -> Vec<f64> {
    let mut m = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let v: f64 = (0..k).map(|l| q[i * k + l] * f[l] * q[j * k + l]).sum();
            m[i * k + j] = v;
            m[j * k + i] = v;
        }
    }
    m
}

/// psd.py `PsdCone.project`: `svec(Q diag(max(lam, 0)) Q')`.
fn psd_project(w: &[f64], k: usize, p: &mut [f64]) {
    let (lam, q) = sym_eigen(&smat(w, k), k);
    let f: Vec<f64> = lam.iter().map(|&l| l.max(0.0)).collect();
    svec(&from_eigen(&q, &f, k), k, p);
}

/// psd.py `psd_scaling` at (s, y): the svec operator of `dY -> W dY W`, W = Q diag(sqrt
/// rho) Q' the NT scaling of the recentred pair in the eigenbasis of `S - Y` (rank k).
fn psd_scaling(s: &[f64], y: &[f64], k: usize, h: &mut [f64]) {
    let d = s.len();
    let w: Vec<f64> = s.iter().zip(y).map(|(a, b)| a - b).collect();
    let (lam, q) = sym_eigen(&smat(&w, k), k);
    let (lmin, lmax) = lam
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &l| {
            (a.min(l), b.max(l))
        });
    let rel = if lmin < 0.0 && lmax > 0.0 {
        TAU_REL_MIXED
    } else {
        TAU_FLOOR
    };
    let kf = k as f64;
    let w_sq: f64 = lam.iter().map(|l| l * l).sum();
    let tau = (dot(s, y) / kf).max(rel * w_sq / kf) + TAU_FLOOR;
    let rho_sqrt: Vec<f64> = lam
        .iter()
        .map(|l| (l / (2.0 * tau.sqrt())).asinh().exp())
        .collect();
    let wm = from_eigen(&q, &rho_sqrt, k);
    // Column b of H: svec(W E_b W), E_b = smat(e_b): w_i w_i' on a diagonal entry (i, i),
    // (w_i w_j' + w_j w_i') / sqrt 2 off it (w_i the i-th column of W).
    let mut m = vec![0.0; k * k];
    let mut col = vec![0.0; d];
    for (b, (i, j)) in svec_entries(k).enumerate() {
        for r in 0..k {
            for c in 0..k {
                let (wri, wrj) = (wm[r * k + i], wm[r * k + j]);
                let (wci, wcj) = (wm[c * k + i], wm[c * k + j]);
                m[r * k + c] = if i == j {
                    wri * wci
                } else {
                    (wri * wcj + wrj * wci) / std::f64::consts::SQRT_2
                };
            }
        }
        svec(&m, k, &mut col);
        for (a, &v) in col.iter().enumerate() {
            h[a * d + b] = v;
        }
    }
}

// -------------------------------------------------------------------------------- power

/// `x^a y^b` for x, y >= 0 (0 where either is 0).
fn geo(x: f64, y: f64, a: f64, b: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        (a * x.ln() + b * y.ln()).exp()
    } else {
        0.0
    }
}

/// The power cone's boundary ray `g(u) = (e^((1-a)u), e^(-a u), sign z)` and its first two
/// derivatives (power.py `PowerCone`).
fn power_ray(u: f64, a: f64, sg: f64) -> [[f64; 3]; 3] {
    let (ex, ey) = (((1.0 - a) * u).exp(), (-a * u).exp());
    [
        [ex, ey, sg],
        [(1.0 - a) * ex, -a * ey, 0.0],
        [(1.0 - a) * (1.0 - a) * ex, a * a * ey, 0.0],
    ]
}

/// ray.py `_ray_argmax` on one row: the grid point (ray.py `_GRID`: sinh of 321 points on
/// [-6.4, 6.4]) maximising `<g, w> / |g|` over those with `<g, w> > 0`, then safeguarded
/// Newton on `N(r) = <g', w>|g|^2 - <g, w><g, g'>` in the bracket of its neighbours.
fn ray_argmax(w: &[f64], ray: impl Fn(f64) -> [[f64; 3]; 3]) -> f64 {
    let grid: Vec<f64> = (0..321)
        .map(|i| (-6.4 + 12.8 * i as f64 / 320.0).sinh())
        .collect();
    let mut best = (0usize, f64::NEG_INFINITY);
    for (i, &u) in grid.iter().enumerate() {
        let g = ray(u)[0];
        let gw = dot(&g, w);
        if gw > 0.0 {
            let v = gw / dot(&g, &g).sqrt();
            if v > best.1 {
                best = (i, v);
            }
        }
    }
    let k = best.0;
    let mut lo = grid[k.saturating_sub(1)];
    let mut hi = grid[(k + 1).min(grid.len() - 1)];
    let mut r = grid[k];
    for _ in 0..80 {
        let [g, g1, g2] = ray(r);
        let (gw, g1w, g2w) = (dot(&g, w), dot(&g1, w), dot(&g2, w));
        let (nn, gg1) = (dot(&g, &g), dot(&g, &g1));
        let n = g1w * nn - gw * gg1;
        let dn = g2w * nn + g1w * gg1 - gw * (dot(&g1, &g1) + dot(&g, &g2));
        if n > 0.0 {
            lo = r;
        } else {
            hi = r;
        }
        let step = r - n / if dn < 0.0 { dn } else { -1.0 };
        let ok = dn < 0.0 && step > lo && step < hi;
        let tiny = n == 0.0 || (dn < 0.0 && (step - r).abs() <= 1e-8 * (1.0 + r.abs()));
        let conv = tiny || hi - lo <= 1e-15 * (1.0 + r.abs());
        r = if ok {
            step
        } else if tiny {
            r
        } else {
            0.5 * (lo + hi)
        };
        if conv {
            break;
        }
    }
    r
}

/// power.py `PowerCone.project_and_derivative` (the projection): the closed forms (in K,
/// in the polar cone, z = 0), else `t g(u*)` on the boundary ray.
fn power_project(w: &[f64], a: f64, p: &mut [f64]) {
    let (x, y, z) = (w[0], w[1], w[2]);
    if x >= 0.0 && y >= 0.0 && geo(x, y, a, 1.0 - a) >= z.abs() {
        p.copy_from_slice(w);
        return;
    }
    if x <= 0.0 && y <= 0.0 && geo(-x / a, -y / (1.0 - a), a, 1.0 - a) >= z.abs() {
        p.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    if z == 0.0 {
        p.copy_from_slice(&[x.max(0.0), y.max(0.0), 0.0]);
        return;
    }
    let sg = z.signum();
    let u = ray_argmax(w, |u| power_ray(u, a, sg));
    ray_point(w, &power_ray(u, a, sg)[0], p);
}

/// ray.py `ray_projection_np` (the projection) given g at the maximiser: `t g`, `t = <g, w>
/// / |g|^2`; w itself within KINK_REL |w| of it, 0 where `t |g|` is that small.
fn ray_point(w: &[f64], g: &[f64; 3], p: &mut [f64]) {
    let gg = dot(g, g);
    let t = dot(g, w) / gg;
    let pt = [t * g[0], t * g[1], t * g[2]];
    let e = [pt[0] - w[0], pt[1] - w[1], pt[2] - w[2]];
    let nw = dot(w, w).sqrt();
    if dot(&e, &e).sqrt() <= KINK_REL * nw {
        p.copy_from_slice(w);
    } else if t * gg.sqrt() > KINK_REL * nw {
        p.copy_from_slice(&pt);
    } else {
        p.iter_mut().for_each(|v| *v = 0.0);
    }
}

/// power.py `power_interior` on one row.
fn power_interior(s: [f64; 3], a: f64) -> bool {
    let [x, y, z] = s;
    x > 0.0 && y > 0.0 && (2.0 * a * x.ln() + (2.0 - 2.0 * a) * y.ln()).exp() - z * z > 0.0
}

/// `(M + u u' / c)^-1` from `M^-1` (barrier.py `sherman_morrison`).
fn sherman_morrison(minv: &[[f64; 3]; 3], u: &[f64; 3], c: f64) -> [[f64; 3]; 3] {
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
fn inv3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
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

/// power.py `power_scaling` on one block: pushed inside along (1, 1, 0), the barrier's
/// gradient there and `power_hess_inv` (two Sherman-Morrison steps), `barrier_scaling`.
fn power_scaling(s: &[f64], y: &[f64], a: f64, h: &mut [f64]) {
    let st = push_inside(s, y, [1.0, 1.0, 0.0], |v| power_interior(v, a));
    let [x, yy, z] = st;
    // power_barrier's gradient: -grad phi / phi - ((1-a)/x, a/y, 0), phi = x^2a y^(2-2a) - z^2.
    let g = (2.0 * a * x.ln() + (2.0 - 2.0 * a) * yy.ln()).exp();
    let phi = g - z * z;
    let grad = [
        -(g * 2.0 * a / x) / phi - (1.0 - a) / x,
        -(g * (2.0 - 2.0 * a) / yy) / phi - a / yy,
        2.0 * z / phi,
    ];
    // power_hess_inv: hess f = N + c w w'/psi1 + g1 g1'/psi1^2.
    let r = (a * x.ln() + (1.0 - a) * yy.ln()).exp();
    let sgn = if z >= 0.0 { 1.0 } else { -1.0 };
    let zeta = z * sgn;
    let (psi1, psi2) = (r - zeta, r + zeta);
    let (rx, ry) = (r * a / x, r * (1.0 - a) / yy);
    let g1 = [rx, ry, -sgn];
    let g2 = [rx, ry, sgn];
    let wv = [1.0 / x, -1.0 / yy, 0.0];
    let c = a * (1.0 - a) * r;
    let diag = [(1.0 - a) / (x * x), a / (yy * yy), 0.0];
    let mut n = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            n[i][j] = g2[i] * g2[j] / (psi2 * psi2) + (c / psi2) * wv[i] * wv[j];
        }
        n[i][i] += diag[i];
    }
    let minv = sherman_morrison(&inv3(&n), &wv, psi1 / c);
    let hinv = sherman_morrison(&minv, &g1, psi1 * psi1);
    barrier_scaling(&st, y, &grad, &hinv, h);
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

    #[test]
    fn psd_projection_is_a_moreau_decomposition() {
        // A 4 x 4 indefinite svec point: Pi(w) and Pi(w) - w both PSD, orthogonal, and the
        // Jacobi eigenvectors orthonormal.
        let k = 4;
        let w: Vec<f64> = (0..10)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.9 + 0.1 * i as f64)
            .collect();
        let mut p = vec![0.0; 10];
        psd_project(&w, k, &mut p);
        let d: Vec<f64> = p.iter().zip(&w).map(|(a, b)| a - b).collect();
        let n = dot(&w, &w).sqrt();
        assert!(dot(&p, &d).abs() <= 1e-13 * n * n);
        for v in [&p, &d] {
            let (lam, _) = sym_eigen(&smat(v, k), k);
            assert!(lam.iter().all(|&l| l >= -1e-13 * n), "{lam:?}");
        }
        let (lam, q) = sym_eigen(&smat(&w, k), k);
        assert!(lam.iter().any(|&l| l < 0.0) && lam.iter().any(|&l| l > 0.0));
        for i in 0..k {
            for j in 0..k {
                let qq: f64 = (0..k).map(|l| q[l * k + i] * q[l * k + j]).sum();
                assert!((qq - if i == j { 1.0 } else { 0.0 }).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn power_projection_is_a_moreau_decomposition() {
        for a in [0.3, 0.5, 0.8] {
            for w in [
                [1.0, -0.5, 2.0],
                [-1.0, 2.0, -0.7],
                [0.2, 0.3, -3.0],
                [-2.0, -1.0, 0.1],
            ] {
                let mut p = [0.0; 3];
                power_project(&w, a, &mut p);
                let d = [p[0] - w[0], p[1] - w[1], p[2] - w[2]];
                let n = dot(&w, &w).sqrt();
                assert!(dot(&p, &d).abs() <= 1e-12 * n * n, "{a} {w:?}");
                // p in K; d in K* = {(u/a)^a (v/(1-a))^(1-a) >= |w|, u, v >= 0}.
                assert!(p[0] >= -1e-12 && p[1] >= -1e-12);
                assert!(geo(p[0].max(0.0), p[1].max(0.0), a, 1.0 - a) >= p[2].abs() - 1e-12 * n);
                assert!(d[0] >= -1e-12 && d[1] >= -1e-12);
                let dual = geo(d[0].max(0.0) / a, d[1].max(0.0) / (1.0 - a), a, 1.0 - a);
                assert!(
                    dual >= d[2].abs() - 1e-10 * n,
                    "{a} {w:?}: {dual} vs {}",
                    d[2]
                );
            }
        }
    }
}
