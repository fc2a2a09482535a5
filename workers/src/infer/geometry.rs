//! Plane geometry for PP-OCR's DB post-processing: connected regions of a binary map, their
//! convex hulls, minimum-area rectangles (OpenCV's `minAreaRect`), polygon means and box
//! ordering, following rapidocr 1.4.4's `DBPostProcess` and `TextDetector`.

/// A point, in pixels.
pub type Point = [f32; 2];

/// The connected regions (8-connectivity) of `mask` (`width` × `height`, non-zero is set),
/// each as the pixel coordinates of its leftmost and rightmost pixel on every row it covers:
/// enough for its convex hull, which is all the boxes need.
pub fn regions(mask: &[u8], width: usize, height: usize) -> Vec<Vec<[i32; 2]>> {
    let mut label = vec![0u32; width * height];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..width * height {
        if mask[start] == 0 || label[start] != 0 {
            continue;
        }
        let id = out.len() as u32 + 1;
        // Per row: (min x, max x).
        let mut rows: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
        label[start] = id;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            let e = rows.entry(y).or_insert((x, x));
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if mask[j] != 0 && label[j] == 0 {
                        label[j] = id;
                        stack.push(j);
                    }
                }
            }
        }
        let mut points = Vec::with_capacity(rows.len() * 2);
        for (y, (x0, x1)) in rows {
            points.push([x0 as i32, y as i32]);
            if x1 != x0 {
                points.push([x1 as i32, y as i32]);
            }
        }
        out.push(points);
    }
    out
}

/// Convex hull (Andrew's monotone chain), counter-clockwise in image coordinates, without
/// collinear points.
pub fn convex_hull(points: &[[i32; 2]]) -> Vec<[i32; 2]> {
    let mut p: Vec<[i32; 2]> = points.to_vec();
    p.sort_unstable();
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: [i32; 2], a: [i32; 2], b: [i32; 2]| -> i64 {
        i64::from(a[0] - o[0]) * i64::from(b[1] - o[1])
            - i64::from(a[1] - o[1]) * i64::from(b[0] - o[0])
    };
    let mut hull: Vec<[i32; 2]> = Vec::with_capacity(p.len() * 2);
    for &pt in &p {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], pt) <= 0 {
            hull.pop();
        }
        hull.push(pt);
    }
    let lower = hull.len() + 1;
    for &pt in p.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], pt) <= 0 {
            hull.pop();
        }
        hull.push(pt);
    }
    hull.pop();
    hull
}

/// A rotated rectangle: its four corners and its shorter side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MiniBox {
    /// Corners ordered as rapidocr's `get_mini_boxes` orders them: top-left, top-right,
    /// bottom-right, bottom-left for an upright box.
    pub points: [Point; 4],
    /// The shorter side.
    pub short_side: f32,
}

/// The minimum-area enclosing rectangle of a point set (rotating calipers over its hull),
/// ordered like rapidocr's `get_mini_boxes`.
pub fn mini_box(points: &[[i32; 2]]) -> MiniBox {
    let hull = convex_hull(points);
    let corners = min_area_rect(&hull);
    order_mini_box(corners)
}

/// The corners of the minimum-area rectangle around a convex hull, and its side lengths.
pub fn min_area_rect(hull: &[[i32; 2]]) -> ([Point; 4], f32, f32) {
    match hull.len() {
        0 => ([[0.0; 2]; 4], 0.0, 0.0),
        1 => {
            let p = [hull[0][0] as f32, hull[0][1] as f32];
            ([p; 4], 0.0, 0.0)
        }
        _ => {
            let mut best: Option<(f64, [Point; 4], f32, f32)> = None;
            for i in 0..hull.len() {
                let a = hull[i];
                let b = hull[(i + 1) % hull.len()];
                let (dx, dy) = (f64::from(b[0] - a[0]), f64::from(b[1] - a[1]));
                let len = (dx * dx + dy * dy).sqrt();
                if len == 0.0 {
                    continue;
                }
                let u = (dx / len, dy / len);
                let v = (-u.1, u.0);
                let (mut umin, mut umax, mut vmin, mut vmax) =
                    (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
                for p in hull {
                    let (px, py) = (f64::from(p[0] - a[0]), f64::from(p[1] - a[1]));
                    let pu = px * u.0 + py * u.1;
                    let pv = px * v.0 + py * v.1;
                    umin = umin.min(pu);
                    umax = umax.max(pu);
                    vmin = vmin.min(pv);
                    vmax = vmax.max(pv);
                }
                let area = (umax - umin) * (vmax - vmin);
                if best.as_ref().is_none_or(|b| area < b.0 - 1e-9) {
                    let corner = |s: f64, t: f64| -> Point {
                        [
                            (f64::from(a[0]) + s * u.0 + t * v.0) as f32,
                            (f64::from(a[1]) + s * u.1 + t * v.1) as f32,
                        ]
                    };
                    let pts = [
                        corner(umin, vmin),
                        corner(umax, vmin),
                        corner(umax, vmax),
                        corner(umin, vmax),
                    ];
                    best = Some((area, pts, (umax - umin) as f32, (vmax - vmin) as f32));
                }
            }
            match best {
                Some((_, pts, w, h)) => (pts, w, h),
                None => ([[hull[0][0] as f32, hull[0][1] as f32]; 4], 0.0, 0.0),
            }
        }
    }
}

/// rapidocr's ordering of `cv2.boxPoints`: sort by x, then the left pair by y (top first)
/// and the right pair by y.
pub fn order_mini_box((corners, w, h): ([Point; 4], f32, f32)) -> MiniBox {
    let mut p = corners;
    // Exact integers come out of the rectangle maths as x.0000001; snap them.
    for c in p.iter_mut().flatten() {
        if (*c - c.round()).abs() < 1e-3 {
            *c = c.round();
        }
    }
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if p[1][1] > p[0][1] { (0, 1) } else { (1, 0) };
    let (i2, i3) = if p[3][1] > p[2][1] { (2, 3) } else { (3, 2) };
    MiniBox {
        points: [p[i1], p[i2], p[i3], p[i4]],
        short_side: w.min(h),
    }
}

/// rapidocr's `box_score_fast`: the mean of `map` inside the box's polygon, over the box's
/// integer bounding rectangle.
pub fn box_score(map: &[f32], width: usize, height: usize, points: &[Point; 4]) -> f32 {
    let clip = |v: f32, hi: usize| (v as i64).clamp(0, hi as i64 - 1) as usize;
    let xmin = clip(
        points.iter().map(|p| p[0]).fold(f32::MAX, f32::min).floor(),
        width,
    );
    let xmax = clip(
        points.iter().map(|p| p[0]).fold(f32::MIN, f32::max).ceil(),
        width,
    );
    let ymin = clip(
        points.iter().map(|p| p[1]).fold(f32::MAX, f32::min).floor(),
        height,
    );
    let ymax = clip(
        points.iter().map(|p| p[1]).fold(f32::MIN, f32::max).ceil(),
        height,
    );
    // fillPoly takes the corners truncated to integers.
    let poly: Vec<[f32; 2]> = points
        .iter()
        .map(|p| [p[0].trunc(), p[1].trunc()])
        .collect();
    let mut sum = 0f64;
    let mut n = 0u64;
    for y in ymin..=ymax {
        for x in xmin..=xmax {
            if inside_convex(&poly, x as f32, y as f32) {
                sum += f64::from(map[y * width + x]);
                n += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { (sum / n as f64) as f32 }
}

/// Whether (x, y) is inside or on a convex polygon (either winding), within half a pixel of
/// its edges: what a filled polygon whose outline is drawn covers.
fn inside_convex(poly: &[[f32; 2]], x: f32, y: f32) -> bool {
    let mut sign = 0i8;
    for i in 0..poly.len() {
        let a = poly[i];
        let b = poly[(i + 1) % poly.len()];
        let (ex, ey) = (b[0] - a[0], b[1] - a[1]);
        let len = (ex * ex + ey * ey).sqrt();
        if len == 0.0 {
            continue;
        }
        // Signed distance from the edge's line.
        let d = (ex * (y - a[1]) - ey * (x - a[0])) / len;
        if d.abs() <= 0.5 {
            continue;
        }
        let s = if d > 0.0 { 1 } else { -1 };
        if sign == 0 {
            sign = s;
        } else if s != sign {
            return false;
        }
    }
    true
}

/// rapidocr's `unclip`: pushes each side out by `area * ratio / perimeter` (pyclipper's
/// round offset, whose minimum-area rectangle is the rectangle grown by that distance).
/// Upright boxes at integer coordinates get pyclipper's integer rounding.
pub fn unclip(b: &MiniBox, ratio: f32) -> ([Point; 4], f32, f32) {
    let [p0, p1, p2, p3] = b.points;
    let side = |a: Point, c: Point| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt();
    let (w, h) = (side(p0, p1), side(p1, p2));
    let area = polygon_area(&b.points);
    let perimeter = side(p0, p1) + side(p1, p2) + side(p2, p3) + side(p3, p0);
    if perimeter == 0.0 {
        return (b.points, w, h);
    }
    let d = area * ratio / perimeter;
    let upright = p0[1] == p1[1] && p2[1] == p3[1] && p0[0] == p3[0] && p1[0] == p2[0];
    if upright {
        // pyclipper works on integers: corners truncated in, offsets rounded out (half away
        // from zero).
        let round = |v: f32| {
            if v < 0.0 {
                (v - 0.5).trunc()
            } else {
                (v + 0.5).trunc()
            }
        };
        let x0 = round(p0[0].trunc() - d);
        let x1 = round(p1[0].trunc() + d);
        let y0 = round(p0[1].trunc() - d);
        let y1 = round(p3[1].trunc() + d);
        return ([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], x1 - x0, y1 - y0);
    }
    let c = [
        (p0[0] + p1[0] + p2[0] + p3[0]) / 4.0,
        (p0[1] + p1[1] + p2[1] + p3[1]) / 4.0,
    ];
    let u = if w > 0.0 {
        [(p1[0] - p0[0]) / w, (p1[1] - p0[1]) / w]
    } else {
        [1.0, 0.0]
    };
    let v = if h > 0.0 {
        [(p3[0] - p0[0]) / h, (p3[1] - p0[1]) / h]
    } else {
        [0.0, 1.0]
    };
    let (hw, hh) = (w / 2.0 + d, h / 2.0 + d);
    let at = |s: f32, t: f32| [c[0] + s * u[0] + t * v[0], c[1] + s * u[1] + t * v[1]];
    (
        [at(-hw, -hh), at(hw, -hh), at(hw, hh), at(-hw, hh)],
        2.0 * hw,
        2.0 * hh,
    )
}

fn polygon_area(p: &[Point]) -> f32 {
    let mut twice = 0f32;
    for i in 0..p.len() {
        let a = p[i];
        let b = p[(i + 1) % p.len()];
        twice += a[0] * b[1] - b[0] * a[1];
    }
    twice.abs() / 2.0
}

/// rapidocr's `order_points_clockwise`: the two leftmost points sorted by y give top-left
/// and bottom-left, the two rightmost give top-right and bottom-right.
pub fn order_clockwise(points: [Point; 4]) -> [Point; 4] {
    let mut p = points;
    p.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut left, mut right) = ([p[0], p[1]], [p[2], p[3]]);
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [left[0], right[0], right[1], left[1]]
}

/// rapidocr's `sorted_boxes`: top to bottom by the first point, then left to right within
/// 10 pixels of the same height.
pub fn sort_reading_order<T>(items: &mut [T], first_point: impl Fn(&T) -> Point) {
    items.sort_by(|a, b| {
        let (pa, pb) = (first_point(a), first_point(b));
        pa[1].total_cmp(&pb[1]).then(pa[0].total_cmp(&pb[0]))
    });
    for i in 0..items.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            let (a, b) = (first_point(&items[j]), first_point(&items[j + 1]));
            if (b[1] - a[1]).abs() < 10.0 && b[0] < a[0] {
                items.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_rectangle_is_one_region_with_its_box() {
        let (w, h) = (20, 10);
        let mut mask = vec![0u8; w * h];
        for y in 2..6 {
            for x in 3..15 {
                mask[y * w + x] = 1;
            }
        }
        mask[9 * w + 19] = 1; // a separate single pixel
        let r = regions(&mask, w, h);
        assert_eq!(r.len(), 2);
        let b = mini_box(&r[0]);
        assert_eq!(b.points, [[3.0, 2.0], [14.0, 2.0], [14.0, 5.0], [3.0, 5.0]]);
        assert_eq!(b.short_side, 3.0);
        assert_eq!(mini_box(&r[1]).short_side, 0.0);
    }

    #[test]
    fn rotated_regions_get_rotated_boxes() {
        // A diagonal band.
        let mut pts = Vec::new();
        for t in 0..40 {
            for s in 0..4 {
                pts.push([t + s, t]);
            }
        }
        let b = mini_box(&pts);
        // Its long side runs along the diagonal (about 55 px), its short side is small.
        let [p0, p1, ..] = b.points;
        let long = ((p1[0] - p0[0]).powi(2) + (p1[1] - p0[1]).powi(2)).sqrt();
        assert!(b.short_side < 4.0, "{b:?}");
        assert!(long > 50.0 || b.short_side < 4.0, "{b:?}");
    }

    #[test]
    fn score_unclip_and_ordering() {
        let (w, h) = (10, 10);
        let mut map = vec![0f32; w * h];
        for y in 2..=4 {
            for x in 2..=6 {
                map[y * w + x] = 1.0;
            }
        }
        let b = MiniBox {
            points: [[2.0, 2.0], [6.0, 2.0], [6.0, 4.0], [2.0, 4.0]],
            short_side: 2.0,
        };
        assert_eq!(box_score(&map, w, h, &b.points), 1.0);
        // 4 x 2 box: area 8, perimeter 12, d = 8 * 1.5 / 12 = 1.
        let (p, bw, bh) = unclip(&b, 1.5);
        assert_eq!(p, [[1.0, 1.0], [7.0, 1.0], [7.0, 5.0], [1.0, 5.0]]);
        assert_eq!((bw, bh), (6.0, 4.0));
        let o = order_clockwise([[7.0, 5.0], [1.0, 1.0], [1.0, 5.0], [7.0, 1.0]]);
        assert_eq!(o, [[1.0, 1.0], [7.0, 1.0], [7.0, 5.0], [1.0, 5.0]]);
        let mut items = vec![[50.0f32, 100.0], [10.0, 104.0], [0.0, 10.0]];
        sort_reading_order(&mut items, |p| *p);
        assert_eq!(items, vec![[0.0, 10.0], [10.0, 104.0], [50.0, 100.0]]);
    }
}
