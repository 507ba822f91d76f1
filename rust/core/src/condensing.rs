//! A linear solver that factors a KKT matrix through a condensed (Schur-complement) form
//! when its pattern and values allow, and hands the matrix whole to a fallback backend
//! otherwise: the plumbing that condensed_backend.rs (a diagonal trailing block) and
//! block_condensed.rs (cone blocks) share, behind POUNCE's linear-solver interface.
//!
//! Contract with the interface as in dense_backend.rs: 1-based triplets of one triangle
//! (duplicates summed); `multi_solve` factors when `new_matrix`, reports the negatives,
//! returns `WrongInertia` when `check_neg_evals` and the count differs, and solves `nrhs`
//! right-hand sides stored one after another. A matrix the condensed form refuses goes to
//! the fallback, which then factors, solves and reports the inertia; a wrong inertia is
//! never reported.
use dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor as llt_factor;
use faer::linalg::cholesky::llt::solve as llt_solve;
use faer::{Conj, MatMut, MatRef, Par};
use pounce_linsol::{EMatrixFormat, ESymSolverStatus, SparseSymLinearSolverInterface};

/// pounce-linsol's index type.
pub type Index = i32;

/// The stored triplets, 0-based and oriented to the lower triangle (`rows[i] >= cols[i]`),
/// and the current matrix's value of each.
#[derive(Debug, Default)]
pub struct Triplets {
    pub rows: Vec<usize>,
    pub cols: Vec<usize>,
    pub values: Vec<f64>,
}

impl Triplets {
    /// The first `nnz` of the 1-based triplets `ia`, `ja` of a `dim`-square matrix (either
    /// triangle), values zero; `None` when fewer are given or an index is out of range.
    pub fn from_one_based(dim: usize, nnz: usize, ia: &[Index], ja: &[Index]) -> Option<Self> {
        if ia.len() < nnz || ja.len() < nnz {
            return None;
        }
        let (mut rows, mut cols) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
        for (&i, &j) in ia[..nnz].iter().zip(&ja[..nnz]) {
            if i < 1 || j < 1 || i as usize > dim || j as usize > dim {
                return None;
            }
            let (i, j) = ((i - 1) as usize, (j - 1) as usize);
            rows.push(i.max(j));
            cols.push(i.min(j));
        }
        Some(Triplets {
            rows,
            cols,
            values: vec![0.0; nnz],
        })
    }
}

/// A dense `k x k` symmetric matrix (column-major, lower triangle used; the condensed
/// forms' S) and its Cholesky factor, in place, with faer's scratch allocated once.
pub struct DenseLlt {
    pub a: Vec<f64>,
    pub k: usize,
    mem: MemBuffer,
}

impl DenseLlt {
    /// A zero `k x k` matrix.
    pub fn new(k: usize) -> Self {
        DenseLlt {
            a: vec![0.0; k * k],
            k,
            mem: MemBuffer::new(
                llt_factor::cholesky_in_place_scratch::<f64>(k, Par::Seq, Default::default())
                    .or(llt_solve::solve_in_place_scratch::<f64>(k, 1, Par::Seq)),
            ),
        }
    }

    /// The matrix as a faer view (for products into it).
    pub fn as_mut(&mut self) -> MatMut<'_, f64> {
        MatMut::from_column_major_slice_mut(&mut self.a, self.k, self.k)
    }

    /// Factor in place; false unless the matrix is numerically positive definite (every
    /// pivot positive and finite).
    pub fn factor(&mut self) -> bool {
        let k = self.k;
        let ok = llt_factor::cholesky_in_place(
            MatMut::from_column_major_slice_mut(&mut self.a, k, k),
            Default::default(),
            Par::Seq,
            MemStack::new(&mut self.mem),
            Default::default(),
        )
        .is_ok();
        ok && (0..k).all(|j| {
            let l = self.a[j * k + j];
            l.is_finite() && l > 0.0
        })
    }

    /// `x = A^{-1} x` with the factor of [`Self::factor`] (`x` of length k).
    pub fn solve(&mut self, x: &mut [f64]) {
        let k = self.k;
        llt_solve::solve_in_place_with_conj(
            MatRef::from_column_major_slice(&self.a, k, k),
            Conj::No,
            MatMut::from_column_major_slice_mut(x, k, 1),
            Par::Seq,
            MemStack::new(&mut self.mem),
        );
    }
}

impl Default for DenseLlt {
    fn default() -> Self {
        DenseLlt::new(0)
    }
}

/// A condensed factorization of one pattern.
pub trait Condense {
    /// Read the pattern of a `dim`-square matrix; false when it does not condense (every
    /// matrix then goes to the fallback).
    fn analyse(&mut self, dim: usize, t: &Triplets) -> bool;
    /// Factor the matrix whose values `t` holds: its number of negative eigenvalues, or
    /// `None` to hand it to the fallback.
    fn factor(&mut self, t: &Triplets) -> Option<usize>;
    /// Overwrite one right-hand side (length dim) with the solution.
    fn solve(&mut self, t: &Triplets, x: &mut [f64]);
    /// Called for a matrix handed to the fallback (counts).
    fn on_fallback(&mut self) {}
}

/// The condensed form `C` with its fallback (module docs). Serial.
pub struct Condensing<C> {
    pub(crate) inner: C,
    t: Triplets,
    dim: usize,
    condensable: bool,
    factored: bool,
    fell_back: bool,
    negevals: Index,
    fallback: Box<dyn SparseSymLinearSolverInterface>,
}

impl<C: Condense> Condensing<C> {
    /// `inner` with the backend that takes what it refuses.
    pub fn with_inner(inner: C, fallback: Box<dyn SparseSymLinearSolverInterface>) -> Self {
        Condensing {
            inner,
            t: Triplets::default(),
            dim: 0,
            condensable: false,
            factored: false,
            fell_back: false,
            negevals: 0,
            fallback,
        }
    }

    /// Whether the held factor is the fallback's.
    pub fn fell_back(&self) -> bool {
        self.fell_back
    }

    /// Whether the pattern condenses.
    pub fn condensable(&self) -> bool {
        self.condensable
    }
}

impl<C: Condense> SparseSymLinearSolverInterface for Condensing<C> {
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
        self.t = t;
        self.dim = n;
        self.factored = false;
        self.fell_back = false;
        self.condensable = self.inner.analyse(n, &self.t);
        self.fallback.initialize_structure(dim, nonzeros, ia, ja)
    }

    fn values_array_mut(&mut self) -> &mut [f64] {
        &mut self.t.values
    }

    fn multi_solve(
        &mut self,
        new_matrix: bool,
        ia: &[Index],
        ja: &[Index],
        nrhs: Index,
        rhs_vals: &mut [f64],
        check_neg_evals: bool,
        number_of_neg_evals: Index,
    ) -> ESymSolverStatus {
        let mut new_matrix = new_matrix;
        if new_matrix || !self.factored && !self.fell_back {
            self.factored = false;
            let neg = if self.condensable {
                self.inner.factor(&self.t)
            } else {
                None
            };
            if let Some(neg) = neg {
                self.fell_back = false;
                self.factored = true;
                self.negevals = neg as Index;
                if check_neg_evals && self.negevals != number_of_neg_evals {
                    return ESymSolverStatus::WrongInertia;
                }
            } else {
                self.fell_back = true;
                self.inner.on_fallback();
                self.fallback
                    .values_array_mut()
                    .copy_from_slice(&self.t.values);
                new_matrix = true;
            }
        }
        if self.fell_back {
            return self.fallback.multi_solve(
                new_matrix,
                ia,
                ja,
                nrhs,
                rhs_vals,
                check_neg_evals,
                number_of_neg_evals,
            );
        }
        let n = self.dim;
        let nrhs = nrhs.max(0) as usize;
        if rhs_vals.len() < n * nrhs {
            return ESymSolverStatus::FatalError;
        }
        for x in rhs_vals[..n * nrhs].chunks_exact_mut(n) {
            self.inner.solve(&self.t, x);
        }
        if rhs_vals[..n * nrhs].iter().all(|v| v.is_finite()) {
            ESymSolverStatus::Success
        } else {
            ESymSolverStatus::FatalError
        }
    }

    fn number_of_neg_evals(&self) -> Index {
        if self.fell_back {
            self.fallback.number_of_neg_evals()
        } else {
            self.negevals
        }
    }

    fn increase_quality(&mut self) -> bool {
        self.fallback.increase_quality()
    }

    fn provides_inertia(&self) -> bool {
        self.fallback.provides_inertia()
    }

    fn matrix_format(&self) -> EMatrixFormat {
        EMatrixFormat::TripletFormat
    }
}
