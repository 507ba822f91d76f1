//! The SCS -> POUNCE mapping (cone_layout.rs), one test per cone, and the row ranges.
mod common;

use common::Rng;
use pounce_convex::ConeSpec;
use pounce_layers_core::cone_dims::ConeDims;
use pounce_layers_core::cone_layout::{
    dual_to_scs, slack_scs, warm_to_pounce, ConeLayout, ProblemClass,
};
use pounce_layers_core::cones::psd::svec_rows;
use pounce_layers_core::cones::{exp::Exp, power::Power, Cone, ProductCone};
use pounce_layers_core::pattern::CscPattern;
use pounce_layers_core::structure::{check_cone_rows, ConicStructure};
use pounce_layers_core::Error;

fn layout(m: usize, dims: ConeDims) -> ConeLayout {
    ConeLayout::new(0, m, dims).expect("valid cones")
}

fn blocks(l: &ConeLayout) -> Vec<(usize, usize)> {
    l.dense_blocks.iter().map(|b| (b.start, b.dim)).collect()
}

#[test]
fn zero_rows_become_equalities() {
    let l = layout(
        5,
        ConeDims {
            z: 2,
            l: 3,
            ..Default::default()
        },
    );
    assert_eq!(l.m_eq(), 2);
    assert_eq!(l.m_ineq(), 3);
    assert!(matches!(l.specs[..], [ConeSpec::Nonneg(3)]));
    assert_eq!(l.scs_row_of_ineq, vec![2, 3, 4]);
    assert_eq!(l.class, ProblemClass::Qp);
    assert_eq!((l.h_diag_len(), l.h_blocks_len()), (5, 0));
}

#[test]
fn nonneg_and_soc_are_the_identity() {
    let dims = ConeDims {
        z: 1,
        l: 2,
        q: vec![4, 3],
        ..Default::default()
    };
    let l = layout(10, dims);
    assert!(matches!(
        l.specs[..],
        [
            ConeSpec::Nonneg(2),
            ConeSpec::SecondOrder(4),
            ConeSpec::SecondOrder(3)
        ]
    ));
    assert_eq!(l.scs_row_of_ineq, (1..10).collect::<Vec<_>>());
    assert_eq!(blocks(&l), vec![(3, 4), (7, 3)]);
    assert_eq!(l.class, ProblemClass::Conic);
    assert_eq!((l.h_diag_len(), l.h_blocks_len()), (3, 16 + 9));
}

#[test]
fn exp_is_the_identity() {
    let l = layout(
        6,
        ConeDims {
            ep: 2,
            ..Default::default()
        },
    );
    assert!(matches!(
        l.specs[..],
        [ConeSpec::Exponential, ConeSpec::Exponential]
    ));
    assert_eq!(l.scs_row_of_ineq, (0..6).collect::<Vec<_>>());
    assert_eq!(blocks(&l), vec![(0, 3), (3, 3)]);
}

/// SCS (x, y, z): x^a y^(1-a) >= |z|; POUNCE (u, v, w): |u| <= v^a w^(1-a).
#[test]
fn power_triples_are_permuted_abs_entry_first() {
    let l = layout(
        7,
        ConeDims {
            l: 1,
            p: vec![0.3, 0.7],
            ..Default::default()
        },
    );
    assert!(matches!(
        l.specs[..],
        [ConeSpec::Nonneg(1), ConeSpec::Power(a), ConeSpec::Power(b)] if a == 0.3 && b == 0.7
    ));
    // POUNCE row r reads SCS row scs_row_of_ineq[r]: (u, v, w) = (z, x, y).
    assert_eq!(l.scs_row_of_ineq, vec![0, 3, 1, 2, 6, 4, 5]);
    for (r, &scs) in l.scs_row_of_ineq.iter().enumerate() {
        assert_eq!(l.ineq_of_scs_row[scs], r);
    }
}

/// The SCS svec (lower triangle, column-major, off-diagonals x sqrt(2)) is POUNCE's own.
#[test]
fn psd_svec_is_the_identity_against_pounce() {
    let mut rng = Rng::new(0);
    for k in [1usize, 2, 3, 5] {
        let a = rng.vec(k * k);
        let sym: Vec<f64> = (0..k * k)
            .map(|ij| {
                let (i, j) = (ij / k, ij % k);
                a[i * k + j] + a[j * k + i]
            })
            .collect();
        let mut ours = Vec::new();
        for j in 0..k {
            for i in j..k {
                let f = if i == j {
                    1.0
                } else {
                    std::f64::consts::SQRT_2
                };
                ours.push(f * sym[i * k + j]);
            }
        }
        let mut pounce = vec![0.0; svec_rows(k).unwrap()];
        pounce_convex::cones::psd::svec(&sym, k, &mut pounce);
        for (a, b) in ours.iter().zip(&pounce) {
            assert!((a - b).abs() <= 1e-15);
        }
        let fro: f64 = sym.iter().map(|v| v * v).sum::<f64>().sqrt();
        let nrm: f64 = ours.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((fro - nrm).abs() <= 1e-14 * fro);
    }
    let l = layout(
        7,
        ConeDims {
            l: 1,
            s: vec![3],
            ..Default::default()
        },
    );
    assert_eq!(l.scs_row_of_ineq, (0..7).collect::<Vec<_>>());
    assert_eq!(blocks(&l), vec![(1, 6)]);
}

#[test]
fn row_ranges_of_a_mixed_product_cone() {
    let dims = ConeDims {
        z: 2,
        l: 3,
        q: vec![3],
        s: vec![2],
        ..Default::default()
    };
    let l = layout(2 + 3 + 3 + 3, dims);
    assert_eq!(blocks(&l), vec![(5, 3), (8, 3)]);
    assert_eq!((l.h_diag_len(), l.h_blocks_len()), (5, 18));
    let dims = ConeDims {
        l: 1,
        q: vec![2],
        ep: 1,
        p: vec![0.5],
        ..Default::default()
    };
    let l = layout(1 + 2 + 3 + 3, dims);
    assert_eq!(blocks(&l), vec![(1, 2), (3, 3), (6, 3)]);
    assert_eq!(l.scs_row_of_ineq, vec![0, 1, 2, 3, 4, 5, 8, 6, 7]);
}

#[test]
fn bad_cones_are_refused() {
    let err = |m, dims| ConeLayout::new(0, m, dims).unwrap_err();
    let psd_exp = ConeDims {
        s: vec![2],
        ep: 1,
        ..Default::default()
    };
    assert!(err(6, psd_exp)
        .message()
        .contains("PSD cones cannot be combined"));
    let alpha = ConeDims {
        p: vec![1.5],
        ..Default::default()
    };
    assert!(err(3, alpha).message().contains("alpha"));
    assert!(matches!(
        err(
            4,
            ConeDims {
                l: 3,
                ..Default::default()
            }
        ),
        Error::Value(_)
    ));
    // 6 + 2 * 2**63 wraps to 6 = m in 64-bit arithmetic: caught as an overflow.
    let wrap = ConeDims {
        l: 6,
        q: vec![1 << 63, 1 << 63],
        ..Default::default()
    };
    assert!(ProductCone::new(&wrap).is_err());
    assert!(check_cone_rows(&wrap, 6)
        .unwrap_err()
        .message()
        .contains("overflow"));
    let psd = ConeDims {
        s: vec![1 << 32, 1 << 32],
        ..Default::default()
    };
    assert!(check_cone_rows(&psd, 6)
        .unwrap_err()
        .message()
        .contains("overflow"));
}

/// The data map gathers P_eff's lower triangle and splits A into equality and cone rows
/// (permuted as the layout says); the recovery maps invert it.
#[test]
fn data_map_assembles_the_pounce_problem_and_recovers_scs() {
    // n = 2; P full pattern [[2, 1], [3, 4]] (asymmetric: P_eff offdiag 2); m = 1 + 3.
    let p = CscPattern::dense(2, 2);
    let a = CscPattern::dense(4, 2);
    let dims = ConeDims {
        z: 1,
        p: vec![0.4],
        ..Default::default()
    };
    let st = ConicStructure::new(2, 4, Some(p), a, dims).unwrap();
    let p_vals = [2.0, 3.0, 1.0, 4.0]; // column-major: P[0,0], P[1,0], P[0,1], P[1,1]
    let p_low = st.map.p_lower_values(Some(&p_vals));
    let slots: Vec<((usize, usize), f64)> = st
        .map
        .p_slots()
        .iter()
        .copied()
        .zip(p_low.iter().copied())
        .collect();
    assert_eq!(slots, vec![((0, 0), 2.0), ((1, 0), 2.0), ((1, 1), 4.0)]);
    let a_vals: Vec<f64> = (0..8).map(|k| k as f64 + 1.0).collect(); // A[r, c] = 4c + r + 1
    let (q, b) = ([0.5, -0.5], [10.0, 11.0, 12.0, 13.0]);
    let prob = st.map.problem(&st.layout, &p_low, &a_vals, &q, &b);
    assert_eq!(prob.b, vec![10.0]);
    // POUNCE rows (u, v, w) = SCS rows (3, 1, 2).
    assert_eq!(prob.h, vec![13.0, 11.0, 12.0]);
    let g: Vec<(usize, usize, f64)> = prob.g.iter().map(|t| (t.row, t.col, t.val)).collect();
    for (r, c, v) in g {
        let scs = [3, 1, 2][r];
        assert_eq!(v, (4 * c + scs + 1) as f64);
    }
    let a_eq: Vec<(usize, usize, f64)> = prob.a.iter().map(|t| (t.row, t.col, t.val)).collect();
    assert_eq!(a_eq, vec![(0, 0, 1.0), (0, 1, 5.0)]);
    // Recovery: y = (y_eq, z) un-permuted; warm start inverse of it.
    let mut y = vec![0.0; 4];
    dual_to_scs(&st.layout, &[7.0], &[1.0, 2.0, 3.0], &mut y);
    assert_eq!(y, vec![7.0, 2.0, 3.0, 1.0]);
    let w = warm_to_pounce(&st.layout, &[0.0, 0.0], &y);
    assert_eq!((w.y, w.z), (vec![7.0], vec![1.0, 2.0, 3.0]));
    let mut s = vec![0.0; 4];
    slack_scs(&st.layout, &st.a, &a_vals, &b, &[1.0, 0.0], &mut s);
    assert_eq!(s, vec![0.0, 11.0 - 2.0, 12.0 - 3.0, 13.0 - 4.0]);
}

/// Zero-size SOC and PSD cones are refused (as pounce_kkt.ConeDims refuses them), not
/// skipped.
#[test]
fn empty_soc_and_psd_cones_are_refused() {
    let soc = ConeDims {
        l: 1,
        q: vec![0],
        ..Default::default()
    };
    assert!(ConeLayout::new(0, 1, soc)
        .unwrap_err()
        .message()
        .contains("SOC sizes must be >= 1"));
    let psd = ConeDims {
        l: 1,
        s: vec![0],
        ..Default::default()
    };
    assert!(ConeLayout::new(0, 1, psd)
        .unwrap_err()
        .message()
        .contains("PSD orders must be >= 1"));
}

/// The product cone's ranges: one per cone in SCS order, empty zero / nonneg parts left
/// out, the H lengths of its diagonal and dense parts.
#[test]
fn product_cone_ranges() {
    let dims = ConeDims {
        l: 2,
        q: vec![3],
        s: vec![2],
        ..Default::default()
    };
    let p = ProductCone::new(&dims).unwrap();
    let ranges: Vec<(&str, usize, usize)> = p
        .ranges
        .iter()
        .map(|r| (r.cone.key(), r.start, r.rows))
        .collect();
    assert_eq!(ranges, vec![("l", 0, 2), ("q", 2, 3), ("s", 5, 3)]);
    assert_eq!((p.rows, p.h_diag_len, p.h_blocks_len), (8, 2, 18));
    assert!(!p.is_qp() && !p.has_nonsymmetric());
    let lp = ProductCone::new(&ConeDims {
        z: 1,
        l: 1,
        ..Default::default()
    })
    .unwrap();
    assert!(lp.is_qp());
}

fn in_exp(v: [f64; 3]) -> bool {
    v[1] > 0.0 && v[1] * (v[0] / v[1]).exp() <= v[2] * (1.0 + 1e-12)
}

fn in_power(a: f64, v: [f64; 3]) -> bool {
    v[0] >= 0.0 && v[1] >= 0.0 && v[0].powf(a) * v[1].powf(1.0 - a) >= v[2].abs() * (1.0 - 1e-12)
}

fn apply(map: &[(usize, usize, f64)], y: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for &(r, c, v) in map {
        out[r] += v * y[c];
    }
    out
}

/// Each dual map sends the dual cone into the cone: points on the dual cone's boundary
/// (from its closed form) map into K, and points outside it do not.
#[test]
fn dual_maps_send_the_dual_cone_into_the_cone() {
    let mut rng = Rng::new(5);
    for _ in 0..50 {
        // K_exp* = {u < 0, -u exp(v/u) <= e w}: on the boundary, w = -u exp(v/u) / e.
        let (u, v) = (-0.1 - rng.uniform().abs(), rng.uniform());
        let w = -u * (v / u).exp() / std::f64::consts::E;
        assert!(in_exp(apply(&Exp.dual_map(), [u, v, w * (1.0 + 1e-9)])));
        assert!(!in_exp(apply(&Exp.dual_map(), [u, v, w * (1.0 - 1e-3)])));
        // K_a* = {(u/a)^a (v/(1-a))^(1-a) >= |w|, u, v >= 0}.
        let a = 0.1 + 0.8 * rng.uniform().abs();
        let (u, v) = (rng.uniform().abs() + 0.1, rng.uniform().abs() + 0.1);
        let w = (u / a).powf(a) * (v / (1.0 - a)).powf(1.0 - a);
        let cone = Power(a);
        assert!(in_power(
            a,
            apply(&cone.dual_map(), [u, v, w * (1.0 - 1e-9)])
        ));
        assert!(!in_power(
            a,
            apply(&cone.dual_map(), [u, v, w * (1.0 + 1e-3)])
        ));
    }
}
