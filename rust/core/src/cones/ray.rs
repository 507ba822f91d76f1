//! Projection onto a 3-row cone through its boundary ray family `t g(r)`, shared by the
//! power cone (pounce_kkt/cones/ray.py: the maximiser of `<g(r), w> / |g(r)|`, then
//! `t = <g, w> / |g|^2`).
use super::dot;

/// ray.py `KINK_REL`: within this distance (relative to |w|) of K or of the polar cone, w
/// is taken to be in it.
pub(crate) const KINK_REL: f64 = 1e-12;

/// ray.py `_ray_argmax` on one row: the grid point (ray.py `_GRID`: sinh of 321 points on
/// [-6.4, 6.4]) maximising `<g, w> / |g|` over those with `<g, w> > 0`, then safeguarded
/// Newton on `N(r) = <g', w>|g|^2 - <g, w><g, g'>` in the bracket of its neighbours.
pub(crate) fn ray_argmax(w: &[f64], ray: impl Fn(f64) -> [[f64; 3]; 3]) -> f64 {
    let grid: Vec<f64> = (0..321)
        .map(|i| (-6.4 + 12.8 * i as f64 / 320.0).sinh())
        .collect();
    let mut best = (0usize, f64::NEG_INFINITY);
    for (i, &u) in grid.iter().enumerate() {
        let g = ray(u)[0];
        let gw = dot(&g, w);
        if gw > 0.0 {
            let v = gw / dot(&g, &g).sqrt();
            if v > best.1 {
                best = (i, v);
            }
        }
    }
    let k = best.0;
    let mut lo = grid[k.saturating_sub(1)];
    let mut hi = grid[(k + 1).min(grid.len() - 1)];
    let mut r = grid[k];
    for _ in 0..80 {
        let [g, g1, g2] = ray(r);
        let (gw, g1w, g2w) = (dot(&g, w), dot(&g1, w), dot(&g2, w));
        let (nn, gg1) = (dot(&g, &g), dot(&g, &g1));
        let n = g1w * nn - gw * gg1;
        let dn = g2w * nn + g1w * gg1 - gw * (dot(&g1, &g1) + dot(&g, &g2));
        if n > 0.0 {
            lo = r;
        } else {
            hi = r;
        }
        let step = r - n / if dn < 0.0 { dn } else { -1.0 };
        let ok = dn < 0.0 && step > lo && step < hi;
        let tiny = n == 0.0 || (dn < 0.0 && (step - r).abs() <= 1e-8 * (1.0 + r.abs()));
        let conv = tiny || hi - lo <= 1e-15 * (1.0 + r.abs());
        r = if ok {
            step
        } else if tiny {
            r
        } else {
            0.5 * (lo + hi)
        };
        if conv {
            break;
        }
    }
    r
}

/// ray.py `ray_projection_np` (the projection) given g at the maximiser: `t g`, `t = <g, w>
/// / |g|^2`; w itself within KINK_REL |w| of it, 0 where `t |g|` is that small.
pub(crate) fn ray_point(w: &[f64], g: &[f64; 3], p: &mut [f64]) {
    let gg = dot(g, g);
    let t = dot(g, w) / gg;
    let pt = [t * g[0], t * g[1], t * g[2]];
    let e = [pt[0] - w[0], pt[1] - w[1], pt[2] - w[2]];
    let nw = dot(w, w).sqrt();
    if dot(&e, &e).sqrt() <= KINK_REL * nw {
        p.copy_from_slice(w);
    } else if t * gg.sqrt() > KINK_REL * nw {
        p.copy_from_slice(&pt);
    } else {
        p.iter_mut().for_each(|v| *v = 0.0);
    }
}
