//! Interpolants over profiled medians: exact at every profiled point, piecewise linear in
//! between, and one documented extrapolation rule outside.
//!
//! **Extrapolation rule** (per dimension): below the smallest profiled key the value of the
//! smallest key is used (small problems are dominated by fixed per-call costs that do not
//! shrink further); above the largest key the value is scaled proportionally to the key,
//! `y_last · x / x_last` (work grows linearly in tokens, batch and KV length, and in chunk² for
//! prefill attention, which is why that grid's outer key is chunk²). Proportional scaling
//! cannot turn negative or decreasing the way extending a noisy last segment can. Every
//! extrapolated lookup is flagged.
//!
//! Repeated keys (Vidur's files measure some points twice) are averaged in file order.

/// One lookup's value and whether it left the profiled range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lookup {
    pub value_ms: f64,
    pub extrapolated: bool,
}

impl Lookup {
    pub(crate) const ZERO: Lookup = Lookup {
        value_ms: 0.0,
        extrapolated: false,
    };

    pub(crate) fn exact(value_ms: f64) -> Lookup {
        Lookup {
            value_ms,
            extrapolated: false,
        }
    }

    /// Scales the value (keeps the flag).
    pub(crate) fn scaled(self, factor: f64) -> Lookup {
        Lookup {
            value_ms: self.value_ms * factor,
            ..self
        }
    }

    /// Marks the lookup as extrapolated when `outside` holds.
    pub(crate) fn flag(self, outside: bool) -> Lookup {
        Lookup {
            extrapolated: self.extrapolated || outside,
            ..self
        }
    }
}

/// Piecewise-linear interpolant through `(x, y)` points with distinct, sorted `x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Series1d {
    xs: Vec<f64>,
    ys: Vec<f64>,
}

impl Series1d {
    /// Fits the points (any order; repeated `x` averaged). `None` when there are none.
    pub fn fit(points: impl IntoIterator<Item = (f64, f64)>) -> Option<Series1d> {
        let mut pts: Vec<(f64, f64)> = points.into_iter().collect();
        if pts.is_empty() {
            return None;
        }
        // Stable sort keeps file order among repeats, so averaging is reproducible.
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut xs = Vec::with_capacity(pts.len());
        let mut ys = Vec::with_capacity(pts.len());
        let mut i = 0;
        while i < pts.len() {
            let x = pts[i].0;
            let mut sum = 0.0;
            let mut n = 0usize;
            while i < pts.len() && pts[i].0 == x {
                sum += pts[i].1;
                n += 1;
                i += 1;
            }
            xs.push(x);
            ys.push(if n == 1 { sum } else { sum / n as f64 });
        }
        Some(Series1d { xs, ys })
    }

    /// The distinct keys, ascending.
    pub fn xs(&self) -> &[f64] {
        &self.xs
    }

    /// The (averaged) values at [`Series1d::xs`].
    pub fn ys(&self) -> &[f64] {
        &self.ys
    }

    /// Evaluates at `x` (see the module docs for the extrapolation rule).
    pub fn eval(&self, x: f64) -> Lookup {
        let n = self.xs.len();
        let (x0, xn) = (self.xs[0], self.xs[n - 1]);
        if x < x0 {
            return Lookup {
                value_ms: self.ys[0],
                extrapolated: true,
            };
        }
        if x > xn {
            let factor = if xn > 0.0 { x / xn } else { 1.0 };
            return Lookup {
                value_ms: self.ys[n - 1] * factor,
                extrapolated: true,
            };
        }
        let i = self.xs.partition_point(|&v| v < x);
        if self.xs[i] == x {
            return Lookup::exact(self.ys[i]);
        }
        // x0 <= x < xs[i] with i >= 1 here.
        Lookup::exact(lerp(
            self.xs[i - 1],
            self.ys[i - 1],
            self.xs[i],
            self.ys[i],
            x,
        ))
    }

    /// Leave-one-out prediction at interior point `j`: the interpolant through the other
    /// points evaluated at `xs[j]`, i.e. the chord between its neighbours. `None` for the end
    /// points (held out, they would be extrapolated, which measures the rule, not the data).
    pub(crate) fn leave_one_out(&self, j: usize) -> Option<f64> {
        if j == 0 || j + 1 >= self.xs.len() {
            return None;
        }
        Some(lerp(
            self.xs[j - 1],
            self.ys[j - 1],
            self.xs[j + 1],
            self.ys[j + 1],
            self.xs[j],
        ))
    }
}

fn lerp(x0: f64, y0: f64, x1: f64, y1: f64, x: f64) -> f64 {
    let t = (x - x0) / (x1 - x0);
    y0 + t * (y1 - y0)
}

/// A 2-D interpolant over scattered points grouped by an outer key: each outer key has its
/// own [`Series1d`] over the inner key, and a query between two outer keys interpolates
/// linearly between the two groups' values. Exact at every profiled point, and needs no
/// rectangular grid — Vidur's prefill grid is triangular (`kv + chunk ≤ max_model_len`).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid2d {
    outer: Vec<f64>,
    groups: Vec<Series1d>,
}

impl Grid2d {
    /// Fits `(outer, inner, y)` points. `None` when there are none.
    pub fn fit(points: impl IntoIterator<Item = (f64, f64, f64)>) -> Option<Grid2d> {
        let mut pts: Vec<(f64, f64, f64)> = points.into_iter().collect();
        if pts.is_empty() {
            return None;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut outer = Vec::new();
        let mut groups = Vec::new();
        let mut i = 0;
        while i < pts.len() {
            let o = pts[i].0;
            let start = i;
            while i < pts.len() && pts[i].0 == o {
                i += 1;
            }
            let series = Series1d::fit(pts[start..i].iter().map(|p| (p.1, p.2)))?;
            outer.push(o);
            groups.push(series);
        }
        Some(Grid2d { outer, groups })
    }

    /// The outer keys, ascending.
    pub fn outer_keys(&self) -> &[f64] {
        &self.outer
    }

    /// The inner series of each outer key.
    pub fn groups(&self) -> &[Series1d] {
        &self.groups
    }

    /// Evaluates at `(outer, inner)`.
    pub fn eval(&self, outer: f64, inner: f64) -> Lookup {
        let n = self.outer.len();
        let (o0, on) = (self.outer[0], self.outer[n - 1]);
        if outer < o0 {
            return self.groups[0].eval(inner).flag(true);
        }
        if outer > on {
            let factor = if on > 0.0 { outer / on } else { 1.0 };
            return self.groups[n - 1].eval(inner).scaled(factor).flag(true);
        }
        let i = self.outer.partition_point(|&v| v < outer);
        if self.outer[i] == outer {
            return self.groups[i].eval(inner);
        }
        let lo = self.groups[i - 1].eval(inner);
        let hi = self.groups[i].eval(inner);
        Lookup {
            value_ms: lerp(
                self.outer[i - 1],
                lo.value_ms,
                self.outer[i],
                hi.value_ms,
                outer,
            ),
            extrapolated: lo.extrapolated || hi.extrapolated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_is_exact_at_points_and_linear_between() {
        let s = Series1d::fit([(8.0, 3.0), (1.0, 1.0), (4.0, 2.0)]).unwrap();
        assert_eq!(s.xs(), &[1.0, 4.0, 8.0]);
        assert_eq!(s.eval(4.0), Lookup::exact(2.0));
        assert_eq!(s.eval(1.0), Lookup::exact(1.0));
        assert_eq!(s.eval(8.0), Lookup::exact(3.0));
        assert_eq!(s.eval(6.0), Lookup::exact(2.5));
        assert_eq!(s.eval(2.5), Lookup::exact(1.5));
    }

    #[test]
    fn series_extrapolates_by_the_documented_rule() {
        let s = Series1d::fit([(2.0, 1.0), (4.0, 2.0)]).unwrap();
        let below = s.eval(1.0);
        assert_eq!((below.value_ms, below.extrapolated), (1.0, true));
        let above = s.eval(10.0);
        assert_eq!((above.value_ms, above.extrapolated), (5.0, true));
        // A series whose last key is 0 cannot scale proportionally: it holds its value.
        let zero = Series1d::fit([(0.0, 0.7)]).unwrap();
        assert_eq!(zero.eval(64.0).value_ms, 0.7);
        assert!(zero.eval(64.0).extrapolated && !zero.eval(0.0).extrapolated);
    }

    #[test]
    fn repeated_keys_are_averaged_and_loo_uses_neighbours() {
        let s = Series1d::fit([(1.0, 1.0), (2.0, 4.0), (2.0, 6.0), (3.0, 9.0)]).unwrap();
        assert_eq!(s.ys(), &[1.0, 5.0, 9.0]);
        assert_eq!(s.leave_one_out(1), Some(5.0));
        assert_eq!(s.leave_one_out(0), None);
        assert_eq!(s.leave_one_out(2), None);
        assert!(Series1d::fit(std::iter::empty()).is_none());
    }

    #[test]
    fn grid_is_exact_at_scattered_points_and_blends_groups() {
        // Triangular like Vidur's prefill grid: outer 1 has inner {0, 10}, outer 3 only {0}.
        let g = Grid2d::fit([(1.0, 0.0, 1.0), (1.0, 10.0, 3.0), (3.0, 0.0, 5.0)]).unwrap();
        assert_eq!(g.eval(1.0, 10.0), Lookup::exact(3.0));
        assert_eq!(g.eval(3.0, 0.0), Lookup::exact(5.0));
        assert_eq!(g.eval(1.0, 5.0), Lookup::exact(2.0));
        // Halfway between the groups at inner 0: (1 + 5) / 2.
        assert_eq!(g.eval(2.0, 0.0), Lookup::exact(3.0));
        // Inner 10 is beyond group 3's range: flagged.
        assert!(g.eval(2.0, 10.0).extrapolated);
        // Above the outer range: proportional in the outer key.
        let above = g.eval(6.0, 0.0);
        assert_eq!((above.value_ms, above.extrapolated), (10.0, true));
        let below = g.eval(0.5, 10.0);
        assert_eq!((below.value_ms, below.extrapolated), (3.0, true));
    }
}
