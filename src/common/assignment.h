#pragma once
// Rectangular linear assignment (min-cost bipartite matching), exact, in double precision.
// Torch-free: used by the eval code and by the distillation matcher.
//
// Same semantics as scipy.optimize.linear_sum_assignment: for an n x m cost matrix it picks
// min(n, m) pairs (row i, column j), each row and each column used at most once, minimising (or
// maximising) the total cost. Algorithm: shortest augmenting paths with dual potentials
// (Jonker-Volgenant as formulated by Crouse 2016, IEEE TAES 52(4)), O(n^2 m) for n <= m; a tall
// matrix (n > m) is solved transposed.
//
// Entry values:
//  - finite: an ordinary cost (sums of |costs| must stay far from overflow, ~1e308);
//  - +inf: a forbidden pair (never assigned); if no assignment of min(n, m) pairs avoids the
//    forbidden pairs, linear_sum_assignment throws instinct::Error ("infeasible");
//  - NaN or -inf: instinct::Error naming the row and column of the first such entry (row-major).
//  With maximize = true the roles of the infinities swap: -inf is forbidden, +inf is an error
//  (the problem is solved as minimisation of -cost, as scipy does).
//
// Determinism and ties: the result depends only on the input values (no randomness, no threads).
// When several assignments are optimal, the one returned is fixed by the algorithm's order: rows of
// the shorter side are inserted in index order 0, 1, ..., and each shortest-path step takes, among
// the columns at the same (exactly equal) distance, an unassigned column first, then the lowest
// column index. Example: an all-zero n x m matrix with n <= m yields pairs (i, i). Among tied optima
// the choice can differ from scipy's; the total cost does not.
#include <vector>

namespace instinct {

/// Result of a rectangular min-cost assignment.
struct Assignment {
  /// The min(n, m) pairs (rows[k], cols[k]), sorted by row; rows and cols are each distinct.
  std::vector<int> rows, cols;
  /// Total of cost(rows[k], cols[k]) over the pairs, in the caller's values (not negated).
  double cost = 0;
  /// Dual potentials u (size n) and v (size m): an optimality certificate. For minimisation:
  ///   u[i] + v[j] <= cost(i, j) for every pair with a finite cost,
  ///   u[i] + v[j] == cost(i, j) on the assigned pairs,
  ///   on the longer side (the columns when n <= m, the rows when n > m) every potential is <= 0
  ///   and the potential of each unassigned row/column is exactly 0.
  /// Then sum(u) + sum(v) equals the total cost and bounds any assignment's cost from below, which
  /// proves optimality (up to floating-point rounding). With maximize = true all inequalities
  /// flip (u[i] + v[j] >= cost(i, j), longer-side potentials >= 0).
  std::vector<double> row_potential, col_potential;
};

/// Solves the assignment for `cost`, n x m row-major (n, m >= 0; n == 0 or m == 0 gives an empty
/// result). Minimises the total over min(n, m) pairs, or maximises it when `maximize`. Throws
/// instinct::Error for NaN/-inf entries (+inf with maximize), infeasible forbidden patterns,
/// negative sizes or a null `cost` with n * m > 0. Time O(min(n,m)^2 max(n,m)), memory O(n m).
Assignment linear_sum_assignment(const double* cost, int n, int m, bool maximize = false);

/// As above; `cost.size()` must equal n * m.
Assignment linear_sum_assignment(const std::vector<double>& cost, int n, int m, bool maximize = false);

}  // namespace instinct
