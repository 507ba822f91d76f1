//! The second-order cone of dimension `d` (`q` entries): `(t, x)` with `|x| <= t`, `t`
//! first in SCS and POUNCE (`ConeSpec::SecondOrder`): identity. Self-dual; the adjoint's
//! `H` is a dense `d x d` block.
use super::centring::{log_nt_ratio, tau};
use super::{dot, Cone};
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Soc(pub usize);

impl Cone for Soc {
    fn key(&self) -> &'static str {
        "q"
    }

    fn rows(&self) -> Option<usize> {
        Some(self.0)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::SecondOrder(self.0))
    }
}

// ------------------------------------------------------------- projection and limit H

pub(crate) fn project(w: &[f64], p: &mut [f64]) {
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

/// soc.py `scaling` at (s, y): NT of the recentred pair in the Jordan frame of
/// `w = s - y` (centring.py `tau`, `tau_rel`, `log_nt_ratio`; rank 1).
pub(crate) fn scaling(s: &[f64], y: &[f64], h: &mut [f64]) {
    let d = s.len();
    let w: Vec<f64> = s.iter().zip(y).map(|(a, b)| a - b).collect();
    let w0 = w[0];
    let a = dot(&w[1..], &w[1..]).max(1e-300).sqrt();
    let (lmin, lmax) = (w0 - a, w0 + a);
    let tau = tau(dot(s, y), dot(&w, &w), 1.0, lmin, lmax);
    let (l1, l2) = (log_nt_ratio(lmax, tau), log_nt_ratio(lmin, tau));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soc_projection_and_scaling_at_a_snapped_pair() {
        let w = [0.5, 1.0, -2.0];
        let mut p = [0.0; 3];
        project(&w, &mut p);
        let a = 5.0_f64.sqrt();
        assert!((p[0] - 0.5 * (0.5 + a)).abs() < 1e-15);
        assert!((p[1] * p[1] + p[2] * p[2]).sqrt() - p[0] < 1e-15);
        let d: Vec<f64> = p.iter().zip(&w).map(|(a, b)| a - b).collect();
        let mut h = [0.0; 9];
        scaling(&p, &d, &mut h);
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
