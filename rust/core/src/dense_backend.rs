//! A dense LBL' backend for POUNCE's linear-solver interface, for small, dense KKT systems.
//!
//! pounce-convex's IPMs factor their KKT system through pounce-linsol's
//! `SparseSymLinearSolverInterface`. For a KKT of a few hundred rows that is mostly filled
//! (the n = m = 50 dense QP of a cvxpylayers batch: 100 x 100, 77% of the lower triangle),
//! a dense Bunch-Kaufman factorization (faer's blocked `lblt`, rook pivoting) does the same
//! work with none of a sparse solver's per-factorization bookkeeping. [`use_dense`] decides
//! by size and fill; the engine choice is made per problem in options.rs. For the IPM's own
//! KKT systems ([`DenseLbltBackend::quasi_definite_first`]) an unpivoted LDL' is tried first
//! and kept only when every pivot has its diagonal entry's sign, none is tiny and the
//! multipliers stay bounded (a quasi-definite matrix); otherwise the matrix is refactored
//! with the LBL'.
//!
//! Contract with the interface (pounce-linsol `sparse_sym_iface.rs`): triplets of one
//! triangle, 1-based (`TripletFormat`); duplicates are summed; `multi_solve` factors when
//! `new_matrix`, reports the number of negative eigenvalues (inertia from the 1x1 and 2x2
//! blocks of B), returns `Singular` for a pivot below `ZERO_PIVOT_REL * max|K|` and
//! `WrongInertia` when `check_neg_evals` and the count differs, and solves the `nrhs`
//! right-hand sides stored one after another in `rhs_vals`.
use crate::condensing::Triplets;
use dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::lblt::factor::{LbltParams, PivotingStrategy};
use faer::linalg::cholesky::lblt::{factor, solve};
use faer::linalg::cholesky::ldlt::factor as ldlt_factor;
use faer::linalg::cholesky::ldlt::solve as ldlt_solve;
use faer::Spec;
use faer::{Conj, Mat, MatMut, Par};
use pounce_linsol::{EMatrixFormat, ESymSolverStatus, SparseSymLinearSolverInterface};

type Index = i32;

/// Largest KKT dimension the dense backend takes.
pub const DENSE_MAX_DIM: usize = 400;
/// Smallest fill of the lower triangle (nnz / (dim (dim + 1) / 2)) for the dense backend
/// above `DENSE_ALWAYS_DIM`.
pub const DENSE_MIN_FILL: f64 = 0.25;
/// Below this dimension the dense backend is used whatever the fill.
pub const DENSE_ALWAYS_DIM: usize = 64;
/// The unpivoted LDL' is kept only if every |pivot| > UNPIVOTED_MIN_PIVOT_REL * max|K| ...
const UNPIVOTED_MIN_PIVOT_REL: f64 = 1e-13;
/// ... and every |multiplier| <= UNPIVOTED_MAX_L (a growth bound; Bunch-Kaufman's is ~2.6).
const UNPIVOTED_MAX_L: f64 = 1e3;
/// A pivot is zero when |d| <= ZERO_PIVOT_REL * max|K|.
const ZERO_PIVOT_REL: f64 = 1e-30;

/// faer's blocked LBL' with rook pivoting (|L| bounded column- and row-wise, the stable
/// choice for the wide dynamic range of interior-point KKT systems; on the n = m = 50 QP
/// batch it was also the fastest of faer's strategies, ahead of partial and partial-diagonal
/// pivoting).
fn lblt_params() -> Spec<LbltParams, f64> {
    let mut p: Spec<LbltParams, f64> = Default::default();
    p.pivoting = PivotingStrategy::Rook;
    p
}

/// Whether a KKT of dimension `dim` with `nnz_lower` stored lower-triangle entries (diagonal
/// included) goes to the dense backend.
pub fn use_dense(dim: usize, nnz_lower: usize) -> bool {
    if dim <= DENSE_ALWAYS_DIM {
        return true;
    }
    let full = dim * (dim + 1) / 2;
    dim <= DENSE_MAX_DIM && nnz_lower as f64 >= DENSE_MIN_FILL * full as f64
}

/// Dense LBL' (Bunch-Kaufman) behind `SparseSymLinearSolverInterface`. Serial.
pub struct DenseLbltBackend {
    dim: usize,
    /// 0-based lower-triangle coordinates of each value slot.
    rows: Vec<usize>,
    cols: Vec<usize>,
    values: Vec<f64>,
    /// The factor: L below the diagonal, B's diagonal on it (column-major, dim x dim).
    lb: Mat<f64>,
    subdiag: Mat<f64>,
    perm: Vec<usize>,
    perm_inv: Vec<usize>,
    mem: Option<MemBuffer>,
    /// Right-hand sides `mem` is sized for.
    mem_rhs: usize,
    negevals: Index,
    factored: bool,
    /// Whether the held factor is the unpivoted LDL' (else Bunch-Kaufman LBL').
    unpivoted: bool,
    /// The diagonal of the last assembled matrix (signs for the unpivoted attempt).
    diag: Vec<f64>,
    /// Whether to try the unpivoted LDL' first (see `try_unpivoted`).
    unpivoted_first: bool,
}

impl DenseLbltBackend {
    pub fn new() -> Self {
        DenseLbltBackend {
            dim: 0,
            rows: Vec::new(),
            cols: Vec::new(),
            values: Vec::new(),
            lb: Mat::zeros(0, 0),
            subdiag: Mat::zeros(0, 1),
            perm: Vec::new(),
            perm_inv: Vec::new(),
            mem: None,
            mem_rhs: 0,
            negevals: 0,
            factored: false,
            unpivoted: false,
            diag: Vec::new(),
            unpivoted_first: false,
        }
    }

    /// The backend that first tries the unpivoted LDL' on each matrix and keeps it when the
    /// matrix behaves as quasi-definite (the IPM's own KKT systems), else factors with the
    /// rook-pivoted LBL'.
    pub fn quasi_definite_first() -> Self {
        DenseLbltBackend {
            unpivoted_first: true,
            ..Self::new()
        }
    }

    /// Whether the held factor is the unpivoted LDL' (else the rook-pivoted LBL').
    pub fn kept_unpivoted(&self) -> bool {
        self.unpivoted
    }

    /// Workspace for the factorization and for solves with up to `nrhs` right-hand sides.
    fn take_scratch(&mut self, nrhs: usize) -> MemBuffer {
        if self.mem.is_none() || nrhs > self.mem_rhs {
            let n = self.dim;
            self.mem_rhs = nrhs.max(self.mem_rhs);
            let req =
                factor::cholesky_in_place_scratch::<usize, f64>(n, Par::Seq, lblt_params()).or(
                    solve::solve_in_place_scratch::<usize, f64>(n, self.mem_rhs, Par::Seq),
                );
            self.mem = Some(MemBuffer::new(req));
        }
        self.mem.take().expect("allocated above")
    }

    /// Scatter the triplet values into `lb` (lower triangle); returns max |K|, or None for a
    /// non-finite value.
    fn assemble(&mut self) -> Option<f64> {
        self.lb.fill(0.0);
        let mut amax = 0.0f64;
        for ((&r, &c), &v) in self.rows.iter().zip(&self.cols).zip(&self.values) {
            if !v.is_finite() {
                return None;
            }
            self.lb[(r, c)] += v;
            amax = amax.max(v.abs());
        }
        Some(amax)
    }

    /// Unpivoted LDL' (faer's blocked left-looking factorization), accepted only when the
    /// matrix behaves as quasi-definite: every pivot keeps the sign of its diagonal entry,
    /// none is below `tiny`, and no multiplier exceeds `UNPIVOTED_MAX_L`. That is the case
    /// for a convex QP's KKT `[[P + reg, A'], [A, -W]]` away from degeneracy, where it
    /// costs about half of the rook-pivoted LBL'. False leaves `lb` overwritten.
    fn try_unpivoted(&mut self, tiny: f64) -> bool {
        let n = self.dim;
        self.diag.clear();
        self.diag.extend((0..n).map(|i| self.lb[(i, i)]));
        if self.diag.contains(&0.0) {
            return false;
        }
        let mut mem = self.take_scratch(4);
        let ok = ldlt_factor::cholesky_in_place(
            self.lb.as_mut(),
            Default::default(),
            Par::Seq,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .is_ok();
        self.mem = Some(mem);
        if !ok {
            return false;
        }
        for j in 0..n {
            let d = self.lb[(j, j)];
            if !(d.abs() > tiny && (d > 0.0) == (self.diag[j] > 0.0)) {
                return false;
            }
            let col = self.lb.col(j);
            let lmax = col
                .as_ref()
                .subrows(j + 1, n - j - 1)
                .iter()
                .fold(0.0f64, |a, v| a.max(v.abs()));
            if lmax.is_nan() || lmax > UNPIVOTED_MAX_L {
                return false;
            }
        }
        true
    }

    fn factor(&mut self, check_neg_evals: bool, number_of_neg_evals: Index) -> ESymSolverStatus {
        let n = self.dim;
        let Some(amax) = self.assemble() else {
            return ESymSolverStatus::FatalError;
        };
        let tiny = ZERO_PIVOT_REL * amax.max(f64::MIN_POSITIVE);
        if self.unpivoted_first
            && self.try_unpivoted(UNPIVOTED_MIN_PIVOT_REL * amax.max(f64::MIN_POSITIVE))
        {
            self.unpivoted = true;
            self.factored = true;
            self.negevals = (0..n).filter(|&i| self.lb[(i, i)] < 0.0).count() as Index;
            if check_neg_evals && self.negevals != number_of_neg_evals {
                return ESymSolverStatus::WrongInertia;
            }
            return ESymSolverStatus::Success;
        }
        if self.unpivoted_first {
            self.assemble();
        }
        self.unpivoted = false;
        let mut mem = self.take_scratch(4);
        let mut sub = self.subdiag.col_mut(0).as_diagonal_mut();
        sub.fill(0.0);
        factor::cholesky_in_place(
            self.lb.as_mut(),
            sub,
            &mut self.perm,
            &mut self.perm_inv,
            Par::Seq,
            MemStack::new(&mut mem),
            lblt_params(),
        );
        self.mem = Some(mem);
        self.factored = true;
        let (mut neg, mut zero) = (0, 0);
        let mut i = 0;
        while i < n {
            let s = self.subdiag[(i, 0)];
            if s != 0.0 && i + 1 < n {
                let (a, c) = (self.lb[(i, i)], self.lb[(i + 1, i + 1)]);
                let det = a * c - s * s;
                if det.abs() <= tiny * tiny {
                    zero += 1;
                    neg += usize::from(a + c < 0.0);
                } else if det < 0.0 {
                    neg += 1;
                } else if a + c < 0.0 {
                    neg += 2;
                }
                i += 2;
            } else {
                let d = self.lb[(i, i)];
                if !d.is_finite() || d.abs() <= tiny {
                    zero += 1;
                } else if d < 0.0 {
                    neg += 1;
                }
                i += 1;
            }
        }
        self.negevals = neg as Index;
        if zero > 0 {
            return ESymSolverStatus::Singular;
        }
        if check_neg_evals && self.negevals != number_of_neg_evals {
            return ESymSolverStatus::WrongInertia;
        }
        ESymSolverStatus::Success
    }

    fn backsolve(&mut self, nrhs: usize, rhs_vals: &mut [f64]) -> ESymSolverStatus {
        let n = self.dim;
        if !self.factored || rhs_vals.len() < n * nrhs {
            return ESymSolverStatus::FatalError;
        }
        let mut mem = self.take_scratch(nrhs);
        let rhs = MatMut::from_column_major_slice_mut(&mut rhs_vals[..n * nrhs], n, nrhs);
        if self.unpivoted {
            ldlt_solve::solve_in_place_with_conj(
                self.lb.as_ref(),
                self.lb.diagonal(),
                Conj::No,
                rhs,
                Par::Seq,
                MemStack::new(&mut mem),
            );
        } else {
            // SAFETY of the permutation: produced by cholesky_in_place for this dimension.
            let perm = unsafe { faer::perm::PermRef::new_unchecked(&self.perm, &self.perm_inv, n) };
            solve::solve_in_place_with_conj(
                self.lb.as_ref(),
                self.lb.diagonal(),
                self.subdiag.col(0).as_diagonal(),
                Conj::No,
                perm,
                rhs,
                Par::Seq,
                MemStack::new(&mut mem),
            );
        }
        self.mem = Some(mem);
        if rhs_vals[..n * nrhs].iter().all(|v| v.is_finite()) {
            ESymSolverStatus::Success
        } else {
            ESymSolverStatus::FatalError
        }
    }
}

impl Default for DenseLbltBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl SparseSymLinearSolverInterface for DenseLbltBackend {
    fn initialize_structure(
        &mut self,
        dim: Index,
        nonzeros: Index,
        ia: &[Index],
        ja: &[Index],
    ) -> ESymSolverStatus {
        let (n, nnz) = (dim.max(0) as usize, nonzeros.max(0) as usize);
        let Some(t) = Triplets::from_one_based(n, nnz, ia, ja) else {
            return ESymSolverStatus::FatalError;
        };
        self.dim = n;
        (self.rows, self.cols, self.values) = (t.rows, t.cols, t.values);
        self.lb = Mat::zeros(n, n);
        self.subdiag = Mat::zeros(n, 1);
        self.perm = vec![0; n];
        self.perm_inv = vec![0; n];
        self.mem = None;
        self.mem_rhs = 0;
        self.factored = false;
        ESymSolverStatus::Success
    }

    fn values_array_mut(&mut self) -> &mut [f64] {
        &mut self.values
    }

    fn multi_solve(
        &mut self,
        new_matrix: bool,
        _ia: &[Index],
        _ja: &[Index],
        nrhs: Index,
        rhs_vals: &mut [f64],
        check_neg_evals: bool,
        number_of_neg_evals: Index,
    ) -> ESymSolverStatus {
        if new_matrix || !self.factored {
            let status = self.factor(check_neg_evals, number_of_neg_evals);
            if status != ESymSolverStatus::Success {
                return status;
            }
        }
        self.backsolve(nrhs.max(0) as usize, rhs_vals)
    }

    fn number_of_neg_evals(&self) -> Index {
        self.negevals
    }

    fn increase_quality(&mut self) -> bool {
        false
    }

    fn provides_inertia(&self) -> bool {
        true
    }

    fn matrix_format(&self) -> EMatrixFormat {
        EMatrixFormat::TripletFormat
    }
}
