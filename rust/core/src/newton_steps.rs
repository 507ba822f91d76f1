//! Batched semismooth Newton steps on the conic optimality conditions (solution refinement),
//! each item on one thread, for every cone (cone_snap.rs).
//!
//! The method and every rule are pounce_kkt/refine.py's (its module docstring states them);
//! this is the same loop per item, with the KKT solve of each step the adjoint's
//! (kkt_adjoint.rs `solve_item`) and the projection and H of cone_snap.rs:
//! - snap the given point to `(Pi_K(w), Pi_K(w) - w)`, `w = s - y`; `before` is the given
//!   point's residual `res` with the complementarity term, the snapped one's without;
//! - step while the residual is above `floor` (curved cones: when the snapped point's is above
//!   `target`; LP/QP: when the better of the two is), at most `max_steps`: solve
//!   `[[P_eff, A'], [A, -H]] [dx; dy] = -[F_1; F_2]` with H at the current snapped pair,
//!   `dw = -F_2 - A dx - dy`, the trial point `x + t dx`, `Pi_K(w + t dw)`, t = 1, 1/2, 1/4;
//!   the first trial whose residual falls is kept; once per item, above target, the full
//!   step is kept even when it raises the residual; an item that keeps no step stops;
//! - return the best point seen, its residual (`after`) and the steps kept.
//!
//! An item whose K cannot be factored, or that panics, is reported `failed` with its point
//! unchanged and NaN residuals; the other items are refined (refine.py `_native_refine`
//! hands it back as given).
use crate::cancel::{catch, Cancel, TestPanic};
use crate::cone_snap::SnapCones;
use crate::kkt_adjoint::{solve_item, AdjointWorkspaces, Env, KktPattern, Worker};
use crate::options::BackendOptions;
use crate::pool::threads;
use crate::structure::ConicStructure;
use rayon::prelude::*;

/// refine.py `BACKTRACKS`: step halvings tried after the full step.
pub const BACKTRACKS: usize = 2;

/// The batch's arrays, batch-first row-major: `p (B, nnzP)` (None without P), `a (B, nnzA)`,
/// `q (B, n)`, `b (B, m)`, the given `x (B, n)`, `y (B, m)`, `s (B, m)`, and `ok (B,)`
/// (items not ok come back unchanged, with NaN residuals and no step).
pub struct NewtonInput<'a> {
    pub bsz: usize,
    pub p: Option<&'a [f64]>,
    pub a: &'a [f64],
    pub q: &'a [f64],
    pub b: &'a [f64],
    pub x: &'a [f64],
    pub y: &'a [f64],
    pub s: &'a [f64],
    pub ok: &'a [bool],
}

/// refine.py's `target`, `floor` and `max_steps`.
#[derive(Debug, Clone, Copy)]
pub struct NewtonSettings {
    pub target: f64,
    pub floor: f64,
    pub max_steps: usize,
}

/// The refined points, the residuals before and after, the steps kept, and which items
/// failed (K not factored, or a panic).
#[derive(Default)]
pub struct NewtonOut {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub s: Vec<f64>,
    pub before: Vec<f64>,
    pub after: Vec<f64>,
    pub steps: Vec<i64>,
    pub failed: Vec<bool>,
}

/// `max |v_i|`, NaN when any entry is NaN, 0 for an empty slice (refine.py `_inf`).
fn inf(v: &[f64]) -> f64 {
    let mut m = 0.0_f64;
    for &a in v {
        if a.is_nan() {
            return f64::NAN;
        }
        m = m.max(a.abs());
    }
    m
}

/// `max(a, b)`, NaN when either is (numpy's `maximum`).
fn nmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// One item's operators and data.
struct Item<'a> {
    st: &'a ConicStructure,
    p: Option<&'a [f64]>,
    a: &'a [f64],
    q: &'a [f64],
    b: &'a [f64],
}

/// A point with its residual and its rows `F_1`, `F_2`.
#[derive(Clone)]
struct Point {
    x: Vec<f64>,
    y: Vec<f64>,
    s: Vec<f64>,
    res: f64,
    r1: Vec<f64>,
    r2: Vec<f64>,
}

impl Item<'_> {
    /// `P_eff x`, `P_eff = (P + P')/2` on P's full pattern.
    fn p_eff(&self, x: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        if let (Some(pat), Some(pv)) = (&self.st.p, self.p) {
            for c in 0..pat.ncols {
                let span = pat.indptr[c]..pat.indptr[c + 1];
                for (&r, &v) in pat.indices[span.clone()].iter().zip(&pv[span]) {
                    out[r] += 0.5 * v * x[c];
                    out[c] += 0.5 * v * x[r];
                }
            }
        }
        out
    }

    fn a_x(&self, x: &[f64]) -> Vec<f64> {
        let pat = &self.st.a;
        let mut out = vec![0.0; pat.nrows];
        for (c, &xc) in x.iter().enumerate().take(pat.ncols) {
            for k in pat.indptr[c]..pat.indptr[c + 1] {
                out[pat.indices[k]] += self.a[k] * xc;
            }
        }
        out
    }

    fn at_y(&self, y: &[f64]) -> Vec<f64> {
        let pat = &self.st.a;
        (0..pat.ncols)
            .map(|c| {
                (pat.indptr[c]..pat.indptr[c + 1])
                    .map(|k| self.a[k] * y[pat.indices[k]])
                    .sum()
            })
            .collect()
    }

    /// refine.py `kkt_residual`: the point (x, y, s) with res, F_1 = P_eff x + q + A'y and
    /// F_2 = A x + s - b; px, ax when known.
    fn point(
        &self,
        x: Vec<f64>,
        y: Vec<f64>,
        s: Vec<f64>,
        px: Option<&[f64]>,
        ax: Option<&[f64]>,
    ) -> Point {
        let px = px.map_or_else(|| self.p_eff(&x), |v| v.to_vec());
        let ax = ax.map_or_else(|| self.a_x(&x), |v| v.to_vec());
        let aty = self.at_y(&y);
        let r1: Vec<f64> = px
            .iter()
            .zip(self.q)
            .zip(&aty)
            .map(|((p, q), a)| p + q + a)
            .collect();
        let r2: Vec<f64> = ax
            .iter()
            .zip(&s)
            .zip(self.b)
            .map(|((a, s), b)| a + s - b)
            .collect();
        let dual = inf(&r1) / (1.0 + nmax(nmax(inf(&px), inf(self.q)), inf(&aty)));
        let primal = inf(&r2) / (1.0 + nmax(nmax(inf(&ax), inf(&s)), inf(self.b)));
        Point {
            x,
            y,
            s,
            res: nmax(dual, primal),
            r1,
            r2,
        }
    }
}

/// One ok item's refinement: (best point, before, steps), or None when a KKT solve failed.
#[allow(clippy::too_many_arguments)]
fn refine_item(
    it: &Item<'_>,
    cones: &SnapCones,
    env: &Env<'_>,
    wk: &mut Worker,
    set: &NewtonSettings,
    x: &[f64],
    y: &[f64],
    s: &[f64],
) -> Option<(Point, f64, i64)> {
    let (n, m) = (it.st.n(), it.st.m());
    let curved = !cones.blocks.is_empty();
    let px = it.p_eff(x);
    let ax = it.a_x(x);
    let w: Vec<f64> = s.iter().zip(y).map(|(s, y)| s - y).collect();
    let (cs, cy) = cones.snap(&w);
    let given = it.point(x.to_vec(), y.to_vec(), s.to_vec(), Some(&px), Some(&ax));
    let moreau = inf(&s.iter().zip(&cs).map(|(a, b)| a - b).collect::<Vec<_>>())
        / (1.0 + inf(s).max(inf(y)));
    let before = nmax(given.res, moreau);
    let mut cur = it.point(x.to_vec(), cy, cs, Some(&px), Some(&ax));
    let (mut best, mut best_res) = if cur.res < before {
        (cur.clone(), cur.res)
    } else {
        (given, before)
    };
    let live = (if curved { cur.res } else { best_res }) > set.target;
    let mut steps = 0_i64;
    let mut spare = true;
    let p_low = it.st.map.p_lower_values(it.p);
    let (mut h_diag, mut h_blocks) = (
        vec![0.0; it.st.layout.h_diag_len()],
        vec![0.0; it.st.layout.h_blocks_len()],
    );
    let mut rhs = vec![0.0; n + m];
    for _ in 0..if live { set.max_steps } else { 0 } {
        // A NaN residual stops too.
        if cur.res.is_nan() || cur.res <= set.floor {
            break;
        }
        cones.limit_scaling(&cur.s, &cur.y, &mut h_diag, &mut h_blocks);
        for (r, v) in rhs.iter_mut().zip(cur.r1.iter().chain(&cur.r2)) {
            *r = -v;
        }
        if !solve_item(env, wk, n, &p_low, it.a, &h_diag, &h_blocks, &rhs) {
            return None;
        }
        let (dx, dy) = wk.solution().split_at(n);
        let wc: Vec<f64> = cur.s.iter().zip(&cur.y).map(|(s, y)| s - y).collect();
        let adx = it.a_x(dx);
        let dw: Vec<f64> = (0..m).map(|i| -cur.r2[i] - adx[i] - dy[i]).collect();
        let mut t = 1.0;
        let mut full: Option<Point> = None;
        let mut taken: Option<Point> = None;
        for _ in 0..=BACKTRACKS {
            let tx: Vec<f64> = cur.x.iter().zip(dx).map(|(x, d)| x + t * d).collect();
            let tw: Vec<f64> = wc.iter().zip(&dw).map(|(w, d)| w + t * d).collect();
            let (ts, ty) = cones.snap(&tw);
            let trial = it.point(tx, ty, ts, None, None);
            if trial.res.is_finite() && trial.res < cur.res {
                taken = Some(trial);
                break;
            }
            full.get_or_insert(trial);
            t *= 0.5;
        }
        let next = match (taken, full) {
            (Some(p), _) => p,
            (None, Some(f)) if spare && f.res.is_finite() && cur.res > set.target => {
                spare = false;
                f
            }
            _ => break,
        };
        cur = next;
        steps += 1;
        if cur.res < best_res {
            best_res = cur.res;
            best = cur.clone();
        }
    }
    best.res = best_res;
    Some((best, before, steps))
}

/// The Newton steps of a batch sharing the structure `st` and its KKT pattern `pat` (items
/// in chunks over the pool, each chunk on one adjoint worker kept in `workspaces`). An item
/// that panics is failed and its worker rebuilt.
#[allow(clippy::too_many_arguments)]
pub fn newton_batch(
    st: &ConicStructure,
    cones: &SnapCones,
    pat: &KktPattern,
    backends: &BackendOptions,
    inp: &NewtonInput<'_>,
    set: &NewtonSettings,
    cancel: &Cancel,
    test_panic: TestPanic,
    workspaces: &AdjointWorkspaces,
) -> NewtonOut {
    let (n, m, bsz) = (st.n(), st.m(), inp.bsz);
    let (nnz_p, nnz_a) = (st.nnz_p(), st.nnz_a());
    let cfg = backends.feral_adjoint();
    let env = Env {
        pat,
        backends,
        cfg: &cfg,
    };
    let per = bsz.div_ceil(threads()).max(1);
    type Res = (Option<(Point, f64, i64)>, bool);
    let chunk = |first: usize, count: usize| -> Vec<Res> {
        let mut wk = workspaces
            .take(backends)
            .unwrap_or_else(|| Worker::new(pat));
        let mut out = Vec::with_capacity(count);
        for i in first..first + count {
            if !inp.ok[i] || cancel.is_set() {
                out.push((None, false));
                continue;
            }
            let it = Item {
                st,
                p: inp.p.map(|p| &p[i * nnz_p..(i + 1) * nnz_p]),
                a: &inp.a[i * nnz_a..(i + 1) * nnz_a],
                q: &inp.q[i * n..(i + 1) * n],
                b: &inp.b[i * m..(i + 1) * m],
            };
            let (x, y, s) = (
                &inp.x[i * n..(i + 1) * n],
                &inp.y[i * m..(i + 1) * m],
                &inp.s[i * m..(i + 1) * m],
            );
            let r = catch(|| {
                test_panic.at_item(i);
                refine_item(&it, cones, &env, &mut wk, set, x, y, s)
            });
            match r {
                Ok(Some(done)) => out.push((Some(done), false)),
                Ok(None) => out.push((None, true)),
                Err(_) => {
                    wk = Worker::new(pat);
                    out.push((None, true));
                }
            }
        }
        workspaces.put(backends.clone(), wk);
        out
    };
    let starts: Vec<usize> = (0..bsz).step_by(per).collect();
    let results: Vec<Res> = if starts.len() <= 1 {
        chunk(0, bsz)
    } else {
        starts
            .par_iter()
            .flat_map_iter(|&f| chunk(f, per.min(bsz - f)))
            .collect()
    };
    let mut out = NewtonOut {
        x: inp.x.to_vec(),
        y: inp.y.to_vec(),
        s: inp.s.to_vec(),
        before: vec![f64::NAN; bsz],
        after: vec![f64::NAN; bsz],
        steps: vec![0; bsz],
        failed: vec![false; bsz],
    };
    for (i, (r, failed)) in results.into_iter().enumerate() {
        out.failed[i] = failed;
        if let Some((p, before, steps)) = r {
            out.x[i * n..(i + 1) * n].copy_from_slice(&p.x);
            out.y[i * m..(i + 1) * m].copy_from_slice(&p.y);
            out.s[i * m..(i + 1) * m].copy_from_slice(&p.s);
            out.before[i] = before;
            out.after[i] = p.res;
            out.steps[i] = steps;
        }
    }
    out
}
