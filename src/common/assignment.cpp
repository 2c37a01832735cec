#include "common/assignment.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <utility>

#include "instinct/common/error.h"

namespace instinct {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Solved {
  std::vector<int> col_of;    // per row: its column
  std::vector<double> u, v;   // potentials: c(i,j) - u[i] - v[j] >= 0, == 0 on matched pairs
  int failed_row = -1;        // >= 0: this row could not be matched (infeasible)
};

// Shortest augmenting paths on c (n x m, n <= m, entries finite or +inf). Row r is inserted by a
// Dijkstra search over reduced costs from r to the nearest free column; then the potentials are
// moved by the distances (keeping reduced costs >= 0, matched ones at 0) and the path is flipped.
// v only ever decreases and only for columns that are or become matched: v <= 0, free columns 0.
Solved solve_wide(const std::vector<double>& c, int n, int m) {
  Solved s;
  s.col_of.assign(n, -1);
  s.u.assign(n, 0.0);
  s.v.assign(m, 0.0);
  std::vector<int> row_of(m, -1), pred(m), todo(m), seen_rows;
  std::vector<double> dist(m);
  std::vector<char> done(m);
  seen_rows.reserve(n);
  for (int r = 0; r < n; ++r) {
    std::fill(dist.begin(), dist.end(), kInf);
    std::fill(done.begin(), done.end(), 0);
    std::iota(todo.begin(), todo.end(), 0);
    seen_rows.clear();
    int ntodo = m, i = r, sink = -1;
    double d = 0;  // distance of the column that led to row i
    while (sink < 0) {
      seen_rows.push_back(i);
      const double* ci = c.data() + static_cast<size_t>(i) * m;
      const double base = d - s.u[i];
      int bk = -1;
      double best = kInf;
      for (int k = 0; k < ntodo; ++k) {
        const int j = todo[k];
        const double rc = base + ci[j] - s.v[j];
        if (rc < dist[j]) { dist[j] = rc; pred[j] = i; }
        // Tie rule (documented in the header): nearest, then unassigned, then lowest index.
        if (dist[j] < best) { best = dist[j]; bk = k; continue; }
        if (dist[j] == best && bk >= 0 && best < kInf) {
          const int b = todo[bk];
          const bool jf = row_of[j] < 0, bf = row_of[b] < 0;
          if ((jf && !bf) || (jf == bf && j < b)) bk = k;
        }
      }
      if (!(best < kInf)) {
        s.failed_row = r;
        return s;
      }
      const int j = todo[bk];
      todo[bk] = todo[--ntodo];
      done[j] = 1;
      d = best;
      if (row_of[j] < 0) sink = j;
      else i = row_of[j];
    }
    for (int q : seen_rows) s.u[q] += q == r ? d : d - dist[s.col_of[q]];
    for (int j = 0; j < m; ++j)
      if (done[j]) s.v[j] -= d - dist[j];
    for (int j = sink;;) {
      const int q = pred[j];
      row_of[j] = q;
      std::swap(s.col_of[q], j);
      if (q == r) break;
    }
  }
  return s;
}

}  // namespace

Assignment linear_sum_assignment(const double* cost, int n, int m, bool maximize) {
  INSTINCT_CHECK(n >= 0 && m >= 0, "linear_sum_assignment: negative size ", n, " x ", m);
  Assignment a;
  a.row_potential.assign(n, 0.0);
  a.col_potential.assign(m, 0.0);
  if (n == 0 || m == 0) return a;
  INSTINCT_CHECK(cost, "linear_sum_assignment: null cost for a ", n, " x ", m, " matrix");
  const bool tr = n > m;
  const int rn = tr ? m : n, rm = tr ? n : m;
  const double sign = maximize ? -1.0 : 1.0;
  std::vector<double> c(static_cast<size_t>(n) * m);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j) {
      const double x = sign * cost[static_cast<size_t>(i) * m + j];
      if (std::isnan(x) || x == -kInf)
        fail("linear_sum_assignment: cost(", i, ", ", j, ") of the ", n, " x ", m, " matrix is ",
             cost[static_cast<size_t>(i) * m + j], "; expected a number or ", maximize ? "-inf" : "+inf",
             " (forbidden pair)");
      c[tr ? static_cast<size_t>(j) * n + i : static_cast<size_t>(i) * m + j] = x;
    }
  Solved s = solve_wide(c, rn, rm);
  if (s.failed_row >= 0)
    fail("linear_sum_assignment: infeasible ", n, " x ", m, " cost matrix: every assignment of ", rn,
         " pairs uses a forbidden (", maximize ? "-inf" : "+inf", ") entry (", tr ? "column " : "row ", s.failed_row,
         " cannot join a matching of the ", tr ? "columns" : "rows", " before it)");

  std::vector<std::pair<int, int>> pairs(rn);
  for (int k = 0; k < rn; ++k) pairs[k] = tr ? std::make_pair(s.col_of[k], k) : std::make_pair(k, s.col_of[k]);
  if (tr) std::sort(pairs.begin(), pairs.end());
  a.rows.resize(rn);
  a.cols.resize(rn);
  for (int k = 0; k < rn; ++k) {
    a.rows[k] = pairs[k].first;
    a.cols[k] = pairs[k].second;
    a.cost += cost[static_cast<size_t>(a.rows[k]) * m + a.cols[k]];
  }
  const std::vector<double>& u = tr ? s.v : s.u;
  const std::vector<double>& v = tr ? s.u : s.v;
  for (int i = 0; i < n; ++i) a.row_potential[i] = sign * u[i];
  for (int j = 0; j < m; ++j) a.col_potential[j] = sign * v[j];
  return a;
}

Assignment linear_sum_assignment(const std::vector<double>& cost, int n, int m, bool maximize) {
  INSTINCT_CHECK(n >= 0 && m >= 0, "linear_sum_assignment: negative size ", n, " x ", m);
  INSTINCT_CHECK(cost.size() == static_cast<size_t>(n) * m, "linear_sum_assignment: cost has ", cost.size(),
                 " entries; expected n * m = ", n, " * ", m, " = ", static_cast<size_t>(n) * m);
  return linear_sum_assignment(cost.data(), n, m, maximize);
}

}  // namespace instinct
