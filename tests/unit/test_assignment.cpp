// linear_sum_assignment: hand-computed cases, brute force over every assignment (n, m <= 8), the
// dual certificate, scipy fixtures (tests/python/fixtures_assignment.py), forbidden/invalid entries.
// A greedy or otherwise suboptimal solver fails BeatsGreedy, the brute-force and the scipy tests.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/assignment.h"
#include "instinct/common/error.h"
#include "test_helpers.h"

using instinct::test::error_of;

using instinct::Assignment;
using instinct::linear_sum_assignment;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Portable random numbers (std distributions differ between standard libraries).
struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  double uniform() { return static_cast<double>(g() >> 11) * 0x1.0p-53; }
  int integer(int k) { return static_cast<int>(g() % static_cast<uint64_t>(k)); }
};

std::vector<double> uniform_matrix(Rng& r, int n, int m) {
  std::vector<double> c(static_cast<size_t>(n) * m);
  for (auto& x : c) x = r.uniform();
  return c;
}

std::vector<double> integer_matrix(Rng& r, int n, int m, int k) {
  std::vector<double> c(static_cast<size_t>(n) * m);
  for (auto& x : c) x = r.integer(k);
  return c;
}

// Structural checks: min(n, m) pairs sorted by row, distinct in-range rows and columns, allowed
// entries only, `cost` equal to the sum of the chosen entries, potentials sized n and m.
::testing::AssertionResult well_formed(const std::vector<double>& c, int n, int m, const Assignment& a) {
  const size_t k = static_cast<size_t>(std::min(n, m));
  if (a.rows.size() != k || a.cols.size() != k) return ::testing::AssertionFailure() << "wrong pair count " << a.rows.size();
  if (a.row_potential.size() != size_t(n) || a.col_potential.size() != size_t(m))
    return ::testing::AssertionFailure() << "potential sizes";
  std::vector<char> used(m, 0);
  double total = 0;
  for (size_t p = 0; p < k; ++p) {
    const int i = a.rows[p], j = a.cols[p];
    if (i < 0 || i >= n || j < 0 || j >= m) return ::testing::AssertionFailure() << "pair out of range " << i << "," << j;
    if (p > 0 && a.rows[p - 1] >= i) return ::testing::AssertionFailure() << "rows not strictly increasing at " << p;
    if (used[j]++) return ::testing::AssertionFailure() << "column " << j << " used twice";
    const double x = c[size_t(i) * m + j];
    if (std::isinf(x)) return ::testing::AssertionFailure() << "forbidden pair " << i << "," << j << " assigned";
    total += x;
  }
  if (std::abs(total - a.cost) > 1e-12 * (1 + std::abs(total)))
    return ::testing::AssertionFailure() << "cost " << a.cost << " but pairs sum to " << total;
  return ::testing::AssertionSuccess();
}

// The dual certificate documented in assignment.h, checked independently of the solver.
::testing::AssertionResult certificate_holds(const std::vector<double>& c, int n, int m, const Assignment& a,
                                             bool maximize = false) {
  const double s = maximize ? -1.0 : 1.0;  // reduce to minimisation of s * c
  double scale = 1;
  for (double x : c)
    if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
  const double tol = 1e-9 * scale;
  auto red = [&](int i, int j) { return s * c[size_t(i) * m + j] - s * a.row_potential[i] - s * a.col_potential[j]; };
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < m; ++j)
      if (std::isfinite(c[size_t(i) * m + j]) && red(i, j) < -tol)
        return ::testing::AssertionFailure() << "reduced cost " << red(i, j) << " < 0 at (" << i << ", " << j << ")";
  double dual = 0;
  for (double u : a.row_potential) dual += u;
  for (double v : a.col_potential) dual += v;
  for (size_t p = 0; p < a.rows.size(); ++p)
    if (std::abs(red(a.rows[p], a.cols[p])) > tol)
      return ::testing::AssertionFailure() << "assigned pair (" << a.rows[p] << ", " << a.cols[p] << ") not tight";
  const bool cols_long = n <= m;
  const auto& longp = cols_long ? a.col_potential : a.row_potential;
  const auto& matched = cols_long ? a.cols : a.rows;
  std::vector<char> is_matched(longp.size(), 0);
  for (int x : matched) is_matched[x] = 1;
  for (size_t q = 0; q < longp.size(); ++q) {
    if (s * longp[q] > tol) return ::testing::AssertionFailure() << "longer-side potential " << q << " = " << longp[q];
    if (!is_matched[q] && longp[q] != 0)
      return ::testing::AssertionFailure() << "unassigned potential " << q << " = " << longp[q] << " != 0";
  }
  if (std::abs(dual - a.cost) > tol * (n + m))
    return ::testing::AssertionFailure() << "dual objective " << dual << " != cost " << a.cost;
  return ::testing::AssertionSuccess();
}

// Optimal total over every assignment of min(n, m) pairs (+inf: forbidden); +inf if none exists.
double brute_force(const std::vector<double>& c, int n, int m, bool maximize = false) {
  const bool wide = n <= m;
  const int ns = wide ? n : m, nl = wide ? m : n;
  auto at = [&](int s, int l) { return wide ? c[size_t(s) * m + l] : c[size_t(l) * m + s]; };
  const double sign = maximize ? -1 : 1;
  double best = kInf;
  std::vector<char> used(nl, 0);
  std::function<void(int, double)> rec = [&](int s, double acc) {
    if (s == ns) { best = std::min(best, acc); return; }
    for (int l = 0; l < nl; ++l) {
      const double x = sign * at(s, l);
      if (used[l] || x == kInf) continue;
      used[l] = 1;
      rec(s + 1, acc + x);
      used[l] = 0;
    }
  };
  rec(0, 0.0);
  return sign * best;
}

}  // namespace

TEST(Assignment, HandComputedSquare) {
  // Permutation totals: (0,1,2)=6 (0,2,1)=11 (1,0,2)=5 (1,2,0)=9 (2,0,1)=7 (2,1,0)=6.
  const std::vector<double> c{4, 1, 3, 2, 0, 5, 3, 2, 2};
  const auto a = linear_sum_assignment(c, 3, 3);
  EXPECT_EQ(a.rows, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(a.cols, (std::vector<int>{1, 0, 2}));
  EXPECT_DOUBLE_EQ(a.cost, 5);
  EXPECT_TRUE(certificate_holds(c, 3, 3, a));
}

TEST(Assignment, HandComputedRectangular) {
  // Wide: row 0 -> col 1 (2) + row 1 -> col 0 (2) = 4 beats every other choice (5, 7, 5, 8, 7).
  const std::vector<double> w{1, 2, 3, 2, 4, 6};
  const auto a = linear_sum_assignment(w, 2, 3);
  EXPECT_EQ(a.rows, (std::vector<int>{0, 1}));
  EXPECT_EQ(a.cols, (std::vector<int>{1, 0}));
  EXPECT_DOUBLE_EQ(a.cost, 4);
  EXPECT_TRUE(certificate_holds(w, 2, 3, a));
  // Tall (the transpose): row 2 stays unassigned.
  const std::vector<double> t{1, 2, 2, 4, 3, 6};
  const auto b = linear_sum_assignment(t, 3, 2);
  EXPECT_EQ(b.rows, (std::vector<int>{0, 1}));
  EXPECT_EQ(b.cols, (std::vector<int>{1, 0}));
  EXPECT_DOUBLE_EQ(b.cost, 4);
  EXPECT_TRUE(certificate_holds(t, 3, 2, b));
  EXPECT_EQ(b.row_potential[2], 0.0);
  // 1 x N and N x 1 pick the minimum (first index among equal minima).
  const std::vector<double> row{5, 3, 9, 3};
  const auto r = linear_sum_assignment(row, 1, 4);
  EXPECT_EQ(r.cols, std::vector<int>{1});
  EXPECT_DOUBLE_EQ(r.cost, 3);
  const auto col = linear_sum_assignment(row, 4, 1);
  EXPECT_EQ(col.rows, std::vector<int>{1});
  EXPECT_EQ(col.cols, std::vector<int>{0});
}

TEST(Assignment, BeatsGreedy) {
  // Greedy row by row (row 0 takes its cheapest column 0) totals 1 + 100; the optimum is 2 + 2.
  const std::vector<double> c{1, 2, 2, 100};
  const auto a = linear_sum_assignment(c, 2, 2);
  EXPECT_EQ(a.cols, (std::vector<int>{1, 0}));
  EXPECT_DOUBLE_EQ(a.cost, 4);
  // Same trap along columns for a tall matrix: greedy by column gives 1 + 100 + ... .
  const std::vector<double> t{1, 2, 2, 100, 50, 50};
  const auto b = linear_sum_assignment(t, 3, 2);
  EXPECT_DOUBLE_EQ(b.cost, 4);
}

TEST(Assignment, EmptyMatrices) {
  for (auto [n, m] : {std::pair{0, 0}, std::pair{0, 5}, std::pair{5, 0}}) {
    const auto a = linear_sum_assignment(nullptr, n, m);
    EXPECT_TRUE(a.rows.empty());
    EXPECT_TRUE(a.cols.empty());
    EXPECT_EQ(a.cost, 0);
    EXPECT_EQ(a.row_potential.size(), size_t(n));
    EXPECT_EQ(a.col_potential.size(), size_t(m));
    EXPECT_TRUE(linear_sum_assignment(std::vector<double>{}, n, m).rows.empty());
  }
}

TEST(Assignment, MatchesBruteForceRandom) {
  std::vector<std::pair<int, int>> shapes;
  for (int n = 1; n <= 6; ++n)
    for (int m = 1; m <= 6; ++m) shapes.emplace_back(n, m);
  for (auto s : {std::pair{6, 8}, std::pair{8, 6}, std::pair{7, 7}, std::pair{3, 8}, std::pair{8, 3}}) shapes.push_back(s);
  int checked = 0;
  for (auto [n, m] : shapes)
    for (uint64_t seed = 0; seed < 12; ++seed) {
      Rng r(seed * 1000 + n * 10 + m);
      const auto c = uniform_matrix(r, n, m);
      const auto a = linear_sum_assignment(c, n, m);
      ASSERT_TRUE(well_formed(c, n, m, a)) << n << "x" << m << " seed " << seed;
      EXPECT_NEAR(a.cost, brute_force(c, n, m), 1e-12) << n << "x" << m << " seed " << seed;
      EXPECT_TRUE(certificate_holds(c, n, m, a)) << n << "x" << m << " seed " << seed;
      ++checked;
    }
  EXPECT_EQ(checked, 41 * 12);
}

TEST(Assignment, MatchesBruteForceIntegerTies) {
  // Costs in {0, 1, 2} (or {0, 1}): many optimal assignments; the total must still be optimal.
  for (auto [n, m] : {std::pair{2, 2}, std::pair{3, 5}, std::pair{5, 3}, std::pair{4, 4}, std::pair{6, 8},
                      std::pair{8, 6}, std::pair{6, 6}, std::pair{1, 6}, std::pair{6, 1}})
    for (uint64_t seed = 0; seed < 25; ++seed) {
      Rng r(seed + 77);
      const auto c = integer_matrix(r, n, m, seed % 2 ? 2 : 3);
      const auto a = linear_sum_assignment(c, n, m);
      ASSERT_TRUE(well_formed(c, n, m, a)) << n << "x" << m << " seed " << seed;
      EXPECT_EQ(a.cost, brute_force(c, n, m)) << n << "x" << m << " seed " << seed;
      EXPECT_TRUE(certificate_holds(c, n, m, a)) << n << "x" << m << " seed " << seed;
    }
}

TEST(Assignment, MatchesBruteForceWithForbiddenAndMaximize) {
  int infeasible = 0, feasible = 0;
  for (auto [n, m] : {std::pair{3, 3}, std::pair{4, 6}, std::pair{6, 4}, std::pair{5, 5}, std::pair{6, 7}, std::pair{7, 6}})
    for (uint64_t seed = 0; seed < 30; ++seed) {
      Rng r(seed + 5000);
      const bool maximize = seed % 3 == 0;
      auto c = seed % 2 ? integer_matrix(r, n, m, 4) : uniform_matrix(r, n, m);
      for (auto& x : c)
        if (r.uniform() < 0.45) x = maximize ? -kInf : kInf;
      const double best = brute_force(c, n, m, maximize);
      if (std::isinf(best)) {
        ++infeasible;
        EXPECT_THROW(linear_sum_assignment(c, n, m, maximize), instinct::Error) << n << "x" << m << " seed " << seed;
        continue;
      }
      ++feasible;
      const auto a = linear_sum_assignment(c, n, m, maximize);
      ASSERT_TRUE(well_formed(c, n, m, a)) << n << "x" << m << " seed " << seed;
      EXPECT_NEAR(a.cost, best, 1e-12) << n << "x" << m << " seed " << seed;
      EXPECT_TRUE(certificate_holds(c, n, m, a, maximize)) << n << "x" << m << " seed " << seed;
    }
  EXPECT_GT(infeasible, 5);  // both branches exercised
  EXPECT_GT(feasible, 50);
}

TEST(Assignment, DualCertificateRandom) {
  for (auto [n, m] : {std::pair{50, 80}, std::pair{80, 50}, std::pair{64, 64}, std::pair{200, 200}})
    for (uint64_t seed = 0; seed < 3; ++seed) {
      Rng r(seed + 31);
      const auto c = seed == 2 ? integer_matrix(r, n, m, 5) : uniform_matrix(r, n, m);
      for (bool maximize : {false, true}) {
        const auto a = linear_sum_assignment(c, n, m, maximize);
        ASSERT_TRUE(well_formed(c, n, m, a)) << n << "x" << m << " seed " << seed << " max " << maximize;
        EXPECT_TRUE(certificate_holds(c, n, m, a, maximize)) << n << "x" << m << " seed " << seed << " max " << maximize;
      }
    }
}

TEST(Assignment, MatchesScipyFixtures) {
  const std::string dir = instinct::test::fixture_dir("assignment");
  std::ifstream js(dir + "/cases.json");
  ASSERT_TRUE(js) << dir << "/cases.json missing (run through ctest: fixtures.python)";
  const auto cases = nlohmann::json::parse(js).at("cases");
  ASSERT_GE(cases.size(), 30u);
  for (const auto& k : cases) {
    const std::string name = k.at("name");
    const int n = k.at("n"), m = k.at("m");
    const bool maximize = k.at("maximize"), unique = k.at("unique");
    std::vector<double> c(size_t(n) * m);
    std::ifstream bin(dir + "/" + name + ".f64", std::ios::binary);  // little-endian float64, as on x86/ARM
    ASSERT_TRUE(bin.read(reinterpret_cast<char*>(c.data()), std::streamsize(c.size() * sizeof(double)))) << name;
    const auto a = linear_sum_assignment(c, n, m, maximize);
    ASSERT_TRUE(well_formed(c, n, m, a)) << name;
    const double ref = k.at("cost");
    EXPECT_NEAR(a.cost, ref, 1e-9 * std::abs(ref) + 1e-12) << name;
    EXPECT_TRUE(certificate_holds(c, n, m, a, maximize)) << name;
    if (unique) {  // continuous costs: the optimum is unique, so the pairs must be scipy's
      EXPECT_EQ(a.rows, k.at("rows").get<std::vector<int>>()) << name;
      EXPECT_EQ(a.cols, k.at("cols").get<std::vector<int>>()) << name;
    }
  }
}

TEST(Assignment, ForbiddenEntriesAreAvoided) {
  // Only column 0 and column 1 of row 2 are usable for the two columns.
  const std::vector<double> t{1, kInf, kInf, kInf, 3, 4};
  const auto a = linear_sum_assignment(t, 3, 2);
  EXPECT_EQ(a.rows, (std::vector<int>{0, 2}));
  EXPECT_EQ(a.cols, (std::vector<int>{0, 1}));
  EXPECT_DOUBLE_EQ(a.cost, 5);
  EXPECT_TRUE(certificate_holds(t, 3, 2, a));
  const std::vector<double> row{kInf, kInf, 7, kInf};
  EXPECT_EQ(linear_sum_assignment(row, 1, 4).cols, std::vector<int>{2});
  // The cheap entries are forbidden for maximisation when -inf.
  const std::vector<double> mx{-kInf, 1, 2, -kInf};
  const auto b = linear_sum_assignment(mx, 2, 2, true);
  EXPECT_EQ(b.cols, (std::vector<int>{1, 0}));
  EXPECT_DOUBLE_EQ(b.cost, 3);
}

TEST(Assignment, InfeasibleThrows) {
  const std::vector<double> dead_row{kInf, kInf, kInf, 1, 2, 3};
  EXPECT_NE(error_of([&] { linear_sum_assignment(dead_row, 2, 3); }).find("infeasible"), std::string::npos);
  // Rows 0 and 1 both need column 0.
  const std::vector<double> clash{1, kInf, kInf, 2, kInf, kInf, 1, 1, 1};
  const std::string e = error_of([&] { linear_sum_assignment(clash, 3, 3); });
  EXPECT_NE(e.find("infeasible 3 x 3"), std::string::npos) << e;
  EXPECT_NE(e.find("row 1"), std::string::npos) << e;
  // Tall: column 1 is forbidden everywhere.
  const std::vector<double> tall{1, kInf, 2, kInf, 3, kInf};
  const std::string f = error_of([&] { linear_sum_assignment(tall, 3, 2); });
  EXPECT_NE(f.find("column 1"), std::string::npos) << f;
  // All forbidden for maximisation.
  const std::vector<double> none{-kInf, -kInf};
  EXPECT_THROW(linear_sum_assignment(none, 1, 2, true), instinct::Error);
}

TEST(Assignment, NanAndWrongInfinityThrowNamingTheEntry) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<double> c{1, 2, 3, 4, 5, 6};
  c[5] = nan;  // (1, 2) of 2 x 3
  std::string e = error_of([&] { linear_sum_assignment(c, 2, 3); });
  EXPECT_NE(e.find("cost(1, 2)"), std::string::npos) << e;
  EXPECT_NE(e.find("nan"), std::string::npos) << e;
  e = error_of([&] { linear_sum_assignment(c, 3, 2); });  // (2, 1) of the tall reading
  EXPECT_NE(e.find("cost(2, 1)"), std::string::npos) << e;
  c[5] = 6;
  c[1] = -kInf;
  e = error_of([&] { linear_sum_assignment(c, 2, 3); });
  EXPECT_NE(e.find("cost(0, 1)"), std::string::npos) << e;
  EXPECT_NE(e.find("-inf"), std::string::npos) << e;
  EXPECT_NO_THROW(linear_sum_assignment(c, 2, 3, true));  // -inf is "forbidden" when maximising
  c[1] = kInf;
  e = error_of([&] { linear_sum_assignment(c, 2, 3, true); });
  EXPECT_NE(e.find("cost(0, 1)"), std::string::npos) << e;
}

TEST(Assignment, Maximize) {
  const std::vector<double> c{1, 2, 3, 5};  // diagonal 6 beats anti-diagonal 5
  const auto a = linear_sum_assignment(c, 2, 2, true);
  EXPECT_EQ(a.cols, (std::vector<int>{0, 1}));
  EXPECT_DOUBLE_EQ(a.cost, 6);
  EXPECT_TRUE(certificate_holds(c, 2, 2, a, true));
  for (auto [n, m] : {std::pair{4, 7}, std::pair{7, 4}, std::pair{6, 6}})
    for (uint64_t seed = 0; seed < 10; ++seed) {
      Rng r(seed + 900);
      const auto x = uniform_matrix(r, n, m);
      std::vector<double> neg(x.size());
      for (size_t q = 0; q < x.size(); ++q) neg[q] = -x[q];
      const auto mx = linear_sum_assignment(x, n, m, true);
      const auto mn = linear_sum_assignment(neg, n, m);
      EXPECT_NEAR(mx.cost, brute_force(x, n, m, true), 1e-12);
      EXPECT_NEAR(mx.cost, -mn.cost, 1e-12);
      EXPECT_EQ(mx.cols, mn.cols);
    }
}

TEST(Assignment, DeterministicTieBreaking) {
  // Documented rule on an all-tied matrix: pairs (i, i) on the shorter side.
  const std::vector<double> z(15, 0.0);
  const auto w = linear_sum_assignment(z, 3, 5);
  EXPECT_EQ(w.rows, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(w.cols, (std::vector<int>{0, 1, 2}));
  const auto t = linear_sum_assignment(z, 5, 3);
  EXPECT_EQ(t.rows, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(t.cols, (std::vector<int>{0, 1, 2}));
  // Same input, same output, bit for bit, including the potentials.
  Rng r(4242);
  const auto c = integer_matrix(r, 30, 40, 3);
  const auto a = linear_sum_assignment(c, 30, 40), b = linear_sum_assignment(c, 30, 40);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.row_potential, b.row_potential);
  EXPECT_EQ(a.col_potential, b.col_potential);
  const auto p = linear_sum_assignment(c.data(), 30, 40);  // both overloads agree
  EXPECT_EQ(a.cols, p.cols);
}

TEST(Assignment, BadArgumentsThrow) {
  const std::vector<double> c{1, 2, 3};
  std::string e = error_of([&] { linear_sum_assignment(c, 2, 2); });
  EXPECT_NE(e.find("3 entries"), std::string::npos) << e;
  EXPECT_THROW(linear_sum_assignment(c.data(), -1, 3), instinct::Error);
  EXPECT_THROW(linear_sum_assignment(nullptr, 2, 2), instinct::Error);
}
