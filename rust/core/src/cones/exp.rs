//! The exponential cone (`ep` counts them): `(x, y, z)` with `y exp(x/y) <= z`, `y > 0`,
//! the same orientation in SCS and POUNCE (`ConeSpec::Exponential`): identity. The
//! adjoint's `H` is a dense 3 x 3 block.
use super::barrier::{barrier_scaling, push_inside};
use super::ray::KINK_REL;
use super::{dot, Cone};
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Exp;

impl Cone for Exp {
    fn key(&self) -> &'static str {
        "ep"
    }

    fn rows(&self) -> Option<usize> {
        Some(3)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Exponential)
    }

    fn nonsymmetric(&self) -> bool {
        true
    }

    /// `K_exp* = {(u, v, w): u < 0, -u exp(v/u) <= e w}` (closure), i.e.
    /// `(-v, -u, e w) in K_exp`.
    fn dual_map(&self) -> Vec<(usize, usize, f64)> {
        vec![(0, 1, -1.0), (1, 0, -1.0), (2, 2, std::f64::consts::E)]
    }
}

// ------------------------------------------------------------- projection and limit H

/// exp.py `ROOT_STEPS` and `_BRACKET_DOUBLINGS`.
const ROOT_STEPS: usize = 100;
const BRACKET_DOUBLINGS: usize = 64;

/// exp.py `exp_cases` and `exp_projection` (without the derivative) on one row.
pub(crate) fn project(w: &[f64], p: &mut [f64]) {
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

/// exp.py `interior` on one row.
pub(crate) fn interior(s: [f64; 3]) -> bool {
    let [x, y, z] = s;
    y > 0.0 && z > 0.0 && y * (z / y).ln() - x > 0.0
}

/// exp.py `_exp_scaling` on one block: barrier.py `push_inside` along e = (-1, 1, 1), the
/// barrier's gradient there and `exp_hess_inv` in closed form, then `barrier_scaling`.
pub(crate) fn scaling(s: &[f64], y: &[f64], h: &mut [f64]) {
    let st = push_inside(s, y, [-1.0, 1.0, 1.0], interior);
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
            project(&w, &mut p);
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
}
