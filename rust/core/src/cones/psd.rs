//! The PSD cone of order `k` (`s` entries) on `k (k + 1) / 2` svec rows. SCS and POUNCE
//! (`pounce_convex::cones::psd::svec`) use the same svec: lower triangle, column-major,
//! off-diagonals x sqrt(2); so [`svec_to_pounce`] is the identity, kept as a named function
//! with a test so a convention change in either crate has one place to land. Self-dual; the
//! adjoint's `H` is a dense block over the svec rows.
use super::centring::{log_nt_ratio, tau};
use super::{dot, Cone};
use pounce_convex::ConeSpec;

#[derive(Debug)]
pub struct Psd(pub usize);

/// svec rows of an order-`k` PSD cone, `k (k + 1) / 2`, or `None` on overflow.
pub fn svec_rows(k: usize) -> Option<usize> {
    let (a, b) = if k.is_multiple_of(2) {
        (k / 2, k + 1)
    } else {
        (k, k.div_ceil(2))
    };
    a.checked_mul(b)
}

/// POUNCE svec position `i` is SCS svec position `svec_to_pounce(k)[i]`.
pub fn svec_to_pounce(order: usize) -> Vec<usize> {
    (0..svec_rows(order).unwrap_or(0)).collect()
}

impl Cone for Psd {
    fn key(&self) -> &'static str {
        "s"
    }

    fn rows(&self) -> Option<usize> {
        svec_rows(self.0)
    }

    fn pounce(&self) -> Option<ConeSpec> {
        Some(ConeSpec::Psd(self.0))
    }

    fn pounce_order(&self) -> Vec<usize> {
        svec_to_pounce(self.0)
    }
}

// ------------------------------------------------------------- projection and limit H

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
pub(crate) fn project(w: &[f64], k: usize, p: &mut [f64]) {
    let (lam, q) = sym_eigen(&smat(w, k), k);
    let f: Vec<f64> = lam.iter().map(|&l| l.max(0.0)).collect();
    svec(&from_eigen(&q, &f, k), k, p);
}

/// psd.py `scaling` at (s, y): the svec operator of `dY -> W dY W`, W = Q diag(sqrt
/// rho) Q' the NT scaling of the recentred pair in the eigenbasis of `S - Y` (rank k).
pub(crate) fn scaling(s: &[f64], y: &[f64], k: usize, h: &mut [f64]) {
    let d = s.len();
    let w: Vec<f64> = s.iter().zip(y).map(|(a, b)| a - b).collect();
    let (lam, q) = sym_eigen(&smat(&w, k), k);
    let (lmin, lmax) = lam
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &l| {
            (a.min(l), b.max(l))
        });
    let w_sq: f64 = lam.iter().map(|l| l * l).sum();
    let tau = tau(dot(s, y), w_sq, k as f64, lmin, lmax);
    let rho_sqrt: Vec<f64> = lam
        .iter()
        .map(|&l| (0.5 * log_nt_ratio(l, tau)).exp())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psd_projection_is_a_moreau_decomposition() {
        // A 4 x 4 indefinite svec point: Pi(w) and Pi(w) - w both PSD, orthogonal, and the
        // Jacobi eigenvectors orthonormal.
        let k = 4;
        let w: Vec<f64> = (0..10)
            .map(|i| ((i * 7 % 5) as f64 - 2.0) * 0.9 + 0.1 * i as f64)
            .collect();
        let mut p = vec![0.0; 10];
        project(&w, k, &mut p);
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
}
