//! Is an item's `P_eff = (P + P')/2` positive semidefinite?
//!
//! The problem is convex only if it is, and POUNCE's interior-point method does not check:
//! given an indefinite P it reports `optimal` at a point that is no minimum. So every item
//! with a P is checked before it is solved, and one that fails gets the status `nonconvex`
//! (the core raises a `ValueError` naming `P` and the batch index).
//!
//! Test: `P_eff + delta I` must be positive definite, with `delta = PSD_TOL_REL * max|P_eff|`.
//! A PSD P, singular or not, passes (every eigenvalue of the shifted matrix is >= delta,
//! far above rounding); an indefinite one fails once its most negative eigenvalue is below
//! `-delta`. Only the variables P touches enter (a variable without a stored entry adds a
//! zero row and column, which changes nothing). In order of cost:
//! 1. a diagonal entry below `-delta` fails it (`e_i' P e_i < -delta`);
//! 2. Gershgorin: when every diagonal entry plus `delta` is at least the sum of the
//!    magnitudes of its row's off-diagonal entries (diagonal, banded Laplacian-like and other
//!    diagonally dominant P), it passes with no factorization;
//! 3. otherwise a factorization decides: dense (faer's Cholesky, serial) when the matrix is
//!    small or filled enough for the dense KKT backend ([`use_dense`]), else feral's sparse
//!    LDL' and its inertia (the symbolic analysis kept across the worker's items).
//!
//! A worker keeps the last values it checked, so a P broadcast over the batch is checked
//! once per worker.
use crate::dense_backend::use_dense;
use crate::options::{backend, BackendOptions};
use dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::{Mat, Par};
use pounce_linsol::{Factorization, FactorizationError};

/// `delta` relative to `max |P_eff|` (see the module docs).
pub const PSD_TOL_REL: f64 = 1e-9;

type Index = i32;

enum Method {
    /// Every stored entry is on the diagonal: steps 1 and 2 always decide.
    Diagonal,
    /// Dense Cholesky of the `dim x dim` lower triangle; `full`: the slots cover all of it
    /// (then every factorization's input overwrites the last one's factor entirely).
    Dense {
        mat: Mat<f64>,
        mem: MemBuffer,
        full: bool,
    },
    /// Sparse LDL' (feral) with its inertia; the symbolic analysis is kept across items.
    Sparse {
        irn: Vec<Index>,
        jcn: Vec<Index>,
        /// Positions of the diagonal in the triplets (one per local variable).
        diag: Vec<usize>,
        vals: Vec<f64>,
        fact: Option<Box<Factorization>>,
    },
}

/// One worker's checker for a structure's P pattern.
pub struct PsdCheck {
    /// Per lower-triangle slot of `P_eff` (`DataMap::p_slots` order): local `(row, col)`,
    /// row >= col.
    local: Vec<(usize, usize)>,
    method: Method,
    /// Per local variable: its diagonal entry and the sum of its off-diagonal magnitudes.
    diag: Vec<f64>,
    offsum: Vec<f64>,
    /// The last values checked and the verdict.
    last: Vec<f64>,
    last_ok: Option<bool>,
}

impl PsdCheck {
    /// A checker for the lower-triangle slots `slots` (`(row, col)`, row >= col) of an
    /// `n x n` `P_eff`.
    pub fn new(n: usize, slots: &[(usize, usize)]) -> Self {
        let mut local_of = vec![usize::MAX; n];
        let mut dim = 0;
        for &(r, c) in slots {
            for v in [r, c] {
                if local_of[v] == usize::MAX {
                    local_of[v] = dim;
                    dim += 1;
                }
            }
        }
        // Lower-triangle local coordinates (row >= col).
        let local: Vec<(usize, usize)> = slots
            .iter()
            .map(|&(r, c)| {
                let (r, c) = (local_of[r], local_of[c]);
                (r.max(c), r.min(c))
            })
            .collect();
        let method = if local.iter().all(|&(r, c)| r == c) {
            Method::Diagonal
        } else if use_dense(dim, local.len() + dim) {
            let req = cholesky_in_place_scratch::<f64>(dim, Par::Seq, Default::default());
            Method::Dense {
                mat: Mat::zeros(dim, dim),
                mem: MemBuffer::new(req),
                full: local.len() == dim * (dim + 1) / 2,
            }
        } else {
            let mut irn: Vec<Index> = Vec::with_capacity(local.len() + dim);
            let mut jcn: Vec<Index> = Vec::with_capacity(local.len() + dim);
            let mut diag = vec![usize::MAX; dim];
            for (k, &(r, c)) in local.iter().enumerate() {
                irn.push(r as Index + 1);
                jcn.push(c as Index + 1);
                if r == c {
                    diag[r] = k;
                }
            }
            for (i, d) in diag.iter_mut().enumerate() {
                if *d == usize::MAX {
                    *d = irn.len();
                    irn.push(i as Index + 1);
                    jcn.push(i as Index + 1);
                }
            }
            let vals = vec![0.0; irn.len()];
            Method::Sparse {
                irn,
                jcn,
                diag,
                vals,
                fact: None,
            }
        };
        PsdCheck {
            local,
            method,
            diag: vec![0.0; dim],
            offsum: vec![0.0; dim],
            last: Vec::new(),
            last_ok: None,
        }
    }

    /// Whether `P_eff` with lower-triangle values `p_low` (one per slot, all finite) is PSD
    /// to within `PSD_TOL_REL * max|P_eff|`.
    pub fn is_psd(&mut self, p_low: &[f64]) -> bool {
        if let Some(ok) = self.last_ok {
            if self.last == p_low {
                return ok;
            }
        }
        let ok = self.check(p_low);
        self.last.clear();
        self.last.extend_from_slice(p_low);
        self.last_ok = Some(ok);
        ok
    }

    fn check(&mut self, p_low: &[f64]) -> bool {
        // One pass: max |P|, the Gershgorin data and, for the dense method, the matrix.
        self.diag.iter_mut().for_each(|v| *v = 0.0);
        self.offsum.iter_mut().for_each(|v| *v = 0.0);
        let mut amax = 0.0_f64;
        let mut gather = |r: usize, c: usize, v: f64| {
            amax = amax.max(v.abs());
            if r == c {
                self.diag[r] += v;
            } else {
                self.offsum[r] += v.abs();
                self.offsum[c] += v.abs();
            }
        };
        match &mut self.method {
            Method::Dense { mat, full, .. } => {
                if !*full {
                    mat.fill(0.0);
                }
                for (&(r, c), &v) in self.local.iter().zip(p_low) {
                    mat[(r, c)] = v;
                    gather(r, c, v);
                }
            }
            _ => {
                for (&(r, c), &v) in self.local.iter().zip(p_low) {
                    gather(r, c, v);
                }
            }
        }
        if amax == 0.0 {
            return true;
        }
        let delta = PSD_TOL_REL * amax;
        if self.diag.iter().any(|&d| d < -delta) {
            return false;
        }
        if self
            .diag
            .iter()
            .zip(&self.offsum)
            .all(|(&d, &o)| d + delta >= o)
        {
            return true;
        }
        match &mut self.method {
            Method::Diagonal => true,
            Method::Dense { mat, mem, .. } => {
                for (i, &d) in self.diag.iter().enumerate() {
                    mat[(i, i)] = d + delta;
                }
                cholesky_in_place(
                    mat.as_mut(),
                    Default::default(),
                    Par::Seq,
                    MemStack::new(mem),
                    Default::default(),
                )
                .is_ok()
            }
            Method::Sparse {
                irn,
                jcn,
                diag,
                vals,
                fact,
            } => {
                vals.iter_mut().for_each(|v| *v = 0.0);
                vals[..p_low.len()].copy_from_slice(p_low);
                for &d in diag.iter() {
                    vals[d] += delta;
                }
                let r = match fact.as_mut() {
                    Some(f) => f.refactor(vals),
                    None => Factorization::new(
                        diag.len() as Index,
                        irn.clone(),
                        jcn.clone(),
                        vals.clone(),
                        backend(&BackendOptions::default().feral_fast()),
                    )
                    .map(|f| *fact = Some(Box::new(f))),
                };
                match r {
                    Ok(()) => fact
                        .as_ref()
                        .and_then(|f| f.number_of_neg_evals())
                        .is_none_or(|neg| neg == 0),
                    // Singular after the shift: an eigenvalue of P sits at -delta.
                    Err(FactorizationError::Singular) => {
                        *fact = None;
                        false
                    }
                    // Any other failure proves nothing: leave the verdict to the solve.
                    Err(_) => {
                        *fact = None;
                        true
                    }
                }
            }
        }
    }
}
