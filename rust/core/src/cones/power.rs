//! The 3-d power cone with exponent `a` in (0, 1) (`p` lists the exponents). SCS writes
//! `(x, y, z)` with `x^a y^(1-a) >= |z|` (abs entry last); POUNCE's `ConeSpec::Power(a)` is
//! `|u| <= v^a w^(1-a)` on `(u, v, w)` (abs entry first). So POUNCE `(u, v, w)` = SCS
//! `(z, x, y)` with the same `a`. The adjoint's `H` is a dense 3 x 3 block.
use super::barrier::{barrier_scaling, inv3, push_inside, sherman_morrison};
use super::ray::{ray_argmax, ray_point};
use super::Cone;
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Power(pub f64);

impl Cone for Power {
    fn key(&self) -> &'static str {
        "p"
    }

    fn rows(&self) -> Option<usize> {
        Some(3)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Power(self.0))
    }

    /// POUNCE `(u, v, w)` reads SCS offsets `(2, 0, 1)`.
    fn pounce_order(&self) -> Vec<usize> {
        vec![2, 0, 1]
    }

    fn nonsymmetric(&self) -> bool {
        true
    }

    /// `K_a* = {(u/a)^a (v/(1-a))^(1-a) >= |w|}`, i.e. `(u/a, v/(1-a), w) in K_a`.
    fn dual_map(&self) -> Vec<(usize, usize, f64)> {
        let a = self.0;
        vec![(0, 0, 1.0 / a), (1, 1, 1.0 / (1.0 - a)), (2, 2, 1.0)]
    }
}

// ------------------------------------------------------------- projection and limit H

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

/// power.py `PowerCone.project_and_derivative` (the projection): the closed forms (in K,
/// in the polar cone, z = 0), else `t g(u*)` on the boundary ray.
pub(crate) fn project(w: &[f64], a: f64, p: &mut [f64]) {
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

/// power.py `interior` on one row.
fn interior(s: [f64; 3], a: f64) -> bool {
    let [x, y, z] = s;
    x > 0.0 && y > 0.0 && (2.0 * a * x.ln() + (2.0 - 2.0 * a) * y.ln()).exp() - z * z > 0.0
}

/// power.py `scaling` on one block: pushed inside along (1, 1, 0), the barrier's
/// gradient there and `power_hess_inv` (two Sherman-Morrison steps), `barrier_scaling`.
pub(crate) fn scaling(s: &[f64], y: &[f64], a: f64, h: &mut [f64]) {
    let st = push_inside(s, y, [1.0, 1.0, 0.0], |v| interior(v, a));
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
    use super::super::dot;
    use super::*;

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
                project(&w, a, &mut p);
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
