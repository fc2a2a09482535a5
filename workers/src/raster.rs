//! Packed 8-bit BGR images and the few operations the pipelines need on them: OpenCV-exact
//! bilinear resizing (PP-OCR's pre-processing is defined in terms of `cv2.resize`), crops of
//! rotated boxes, 90° rotation, pasting into a sprite sheet, and JPEG encoding.
//!
//! BGR is the channel order PP-OCR models were trained on and the order the Python
//! reference (OpenCV) uses, so frames are converted to it once, by swscale, when decoded.
//!
//! What this module does not do: colour conversion or scaling of decoded frames (swscale
//! does that in [`crate::decode`]), or anything model-specific.

/// A packed BGR24 image: `height` rows of `width * 3` bytes, no padding.
#[derive(Clone, PartialEq, Eq)]
pub struct Bgr {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for Bgr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bgr({}x{})", self.width, self.height)
    }
}

/// An image that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub enum RasterError {
    /// JPEG encoding failed (for example, a side over 65,535 pixels).
    #[error("JPEG encoding failed: {0}")]
    Jpeg(String),
}

impl Bgr {
    /// An image from its packed bytes; `None` when the length does not match.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<Bgr> {
        (width.checked_mul(height)?.checked_mul(3)? == data.len()).then_some(Bgr {
            width,
            height,
            data,
        })
    }

    /// A `width` × `height` image filled with one colour.
    pub fn filled(width: usize, height: usize, bgr: [u8; 3]) -> Bgr {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&bgr);
        }
        Bgr {
            width,
            height,
            data,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The packed bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Mutable packed bytes, for filling in place.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// One row.
    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width * 3..(y + 1) * self.width * 3]
    }

    /// Resizes to `width` × `height` exactly as `cv2.resize(img, (width, height))` does with
    /// its default `INTER_LINEAR` on 8-bit images: pixel-centre alignment, 11-bit fixed-point
    /// weights, OpenCV's rounding, and its switch to area averaging for an exact 2× shrink.
    pub fn resize_linear(&self, width: usize, height: usize) -> Bgr {
        let (sw, sh) = (self.width, self.height);
        if width == 0 || height == 0 || sw == 0 || sh == 0 {
            return Bgr::filled(width, height, [0, 0, 0]);
        }
        if width == sw && height == sh {
            return self.clone();
        }
        if sw == width * 2 && sh == height * 2 {
            return self.halve();
        }
        const SCALE: i32 = 1 << 11;
        // OpenCV computes the scale as the inverse of the inverse scale; keep its rounding.
        let scale_x = 1.0 / (width as f64 / sw as f64);
        let scale_y = 1.0 / (height as f64 / sh as f64);
        // Per destination column: source offset and the two weights.
        let mut xofs = Vec::with_capacity(width);
        let mut alpha = Vec::with_capacity(width);
        for dx in 0..width {
            let fx = ((dx as f64 + 0.5) * scale_x - 0.5) as f32;
            let mut sx = fx.floor() as isize;
            let mut fx = fx - sx as f32;
            if sx < 0 {
                sx = 0;
                fx = 0.0;
            }
            if sx >= sw as isize - 1 {
                sx = sw as isize - 1;
                fx = 0.0;
            }
            xofs.push(sx as usize);
            alpha.push((
                cv_round((1.0 - fx) * SCALE as f32),
                cv_round(fx * SCALE as f32),
            ));
        }
        let horizontal = |y: usize, out: &mut [i32]| {
            let row = self.row(y);
            for (dx, (&sx, &(a0, a1))) in xofs.iter().zip(&alpha).enumerate() {
                let sx1 = (sx + 1).min(sw - 1);
                for c in 0..3 {
                    out[dx * 3 + c] =
                        i32::from(row[sx * 3 + c]) * a0 + i32::from(row[sx1 * 3 + c]) * a1;
                }
            }
        };
        let mut out = vec![0u8; width * height * 3];
        let mut rows: [(usize, Vec<i32>); 2] = [
            (usize::MAX, vec![0; width * 3]),
            (usize::MAX, vec![0; width * 3]),
        ];
        for dy in 0..height {
            let fy = ((dy as f64 + 0.5) * scale_y - 0.5) as f32;
            let sy = fy.floor() as isize;
            let fy = fy - sy as f32;
            let b0 = cv_round((1.0 - fy) * SCALE as f32);
            let b1 = cv_round(fy * SCALE as f32);
            let y0 = sy.clamp(0, sh as isize - 1) as usize;
            let y1 = (sy + 1).clamp(0, sh as isize - 1) as usize;
            for (slot, y) in [(0, y0), (1, y1)] {
                if rows[slot].0 != y {
                    // Reuse the other slot's row when it holds this one.
                    if rows[1 - slot].0 == y {
                        let copy = rows[1 - slot].1.clone();
                        rows[slot] = (y, copy);
                    } else {
                        horizontal(y, &mut rows[slot].1);
                        rows[slot].0 = y;
                    }
                }
            }
            let dst = &mut out[dy * width * 3..(dy + 1) * width * 3];
            let (r0, r1) = (&rows[0].1, &rows[1].1);
            for i in 0..width * 3 {
                // OpenCV's vectorised VResizeLinear for 8-bit output.
                let v = ((b0 * (r0[i] >> 4)) >> 16) + ((b1 * (r1[i] >> 4)) >> 16) + 2;
                dst[i] = (v >> 2).clamp(0, 255) as u8;
            }
        }
        Bgr {
            width,
            height,
            data: out,
        }
    }

    /// An exact 2× shrink by 2 × 2 averaging (OpenCV's `INTER_AREA` fast path).
    fn halve(&self) -> Bgr {
        let (w, h) = (self.width / 2, self.height / 2);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            let (r0, r1) = (self.row(2 * y), self.row(2 * y + 1));
            for x in 0..w {
                for c in 0..3 {
                    let i = 6 * x + c;
                    let sum = u16::from(r0[i])
                        + u16::from(r0[i + 3])
                        + u16::from(r1[i])
                        + u16::from(r1[i + 3]);
                    data.push(((sum + 2) >> 2) as u8);
                }
            }
        }
        Bgr {
            width: w,
            height: h,
            data,
        }
    }

    /// The axis-aligned rectangle at (`x`, `y`) of `width` × `height`, clipped to the image.
    pub fn crop(&self, x: usize, y: usize, width: usize, height: usize) -> Bgr {
        let x = x.min(self.width);
        let y = y.min(self.height);
        let width = width.min(self.width - x);
        let height = height.min(self.height - y);
        let mut data = Vec::with_capacity(width * height * 3);
        for row in y..y + height {
            data.extend_from_slice(&self.row(row)[x * 3..(x + width) * 3]);
        }
        Bgr {
            width,
            height,
            data,
        }
    }

    /// Maps the quadrilateral `quad` (top-left, top-right, bottom-right, bottom-left) onto a
    /// `width` × `height` image, as `cv2.warpPerspective(..., INTER_CUBIC,
    /// BORDER_REPLICATE)` does in PP-OCR's `get_rotate_crop_image`. When the quad is an
    /// axis-aligned rectangle of that size at integer coordinates (the usual case for
    /// horizontal text), this is an exact copy, as it is in OpenCV.
    pub fn warp_quad(&self, quad: [[f32; 2]; 4], width: usize, height: usize) -> Bgr {
        let [tl, tr, br, bl] = quad;
        let integral = quad.iter().flatten().all(|v| v.fract() == 0.0 && *v >= 0.0);
        if integral
            && tl[1] == tr[1]
            && bl[1] == br[1]
            && tl[0] == bl[0]
            && tr[0] == br[0]
            && (tr[0] - tl[0]) as usize == width
            && (bl[1] - tl[1]) as usize == height
        {
            return self.crop(tl[0] as usize, tl[1] as usize, width, height);
        }
        let Some(m) = perspective_from_rect(width as f64, height as f64, quad) else {
            return self.crop(
                tl[0].max(0.0) as usize,
                tl[1].max(0.0) as usize,
                width,
                height,
            );
        };
        let mut data = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let (xf, yf) = (x as f64, y as f64);
                let w = m[6] * xf + m[7] * yf + m[8];
                let (sx, sy) = if w.abs() < 1e-12 {
                    (0.0, 0.0)
                } else {
                    (
                        (m[0] * xf + m[1] * yf + m[2]) / w,
                        (m[3] * xf + m[4] * yf + m[5]) / w,
                    )
                };
                data.extend_from_slice(&self.bicubic(sx as f32, sy as f32));
            }
        }
        Bgr {
            width,
            height,
            data,
        }
    }

    /// Bicubic sample (a = −0.75, OpenCV's) with replicated borders.
    fn bicubic(&self, x: f32, y: f32) -> [u8; 3] {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let wx = cubic_weights(fx);
        let wy = cubic_weights(fy);
        let clamp_x = |v: isize| v.clamp(0, self.width as isize - 1) as usize;
        let clamp_y = |v: isize| v.clamp(0, self.height as isize - 1) as usize;
        let mut acc = [0f32; 3];
        for (j, wyj) in wy.iter().enumerate() {
            let row = self.row(clamp_y(y0 as isize - 1 + j as isize));
            for (i, wxi) in wx.iter().enumerate() {
                let px = clamp_x(x0 as isize - 1 + i as isize) * 3;
                for (c, a) in acc.iter_mut().enumerate() {
                    *a += wyj * wxi * f32::from(row[px + c]);
                }
            }
        }
        acc.map(|v| v.round().clamp(0.0, 255.0) as u8)
    }

    /// Rotates 90° counter-clockwise (`np.rot90`).
    pub fn rotate90_ccw(&self) -> Bgr {
        let (w, h) = (self.height, self.width);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            let sx = self.width - 1 - y;
            for x in 0..w {
                let i = (x * self.width + sx) * 3;
                data.extend_from_slice(&self.data[i..i + 3]);
            }
        }
        Bgr {
            width: w,
            height: h,
            data,
        }
    }

    /// Copies `src` into this image with its top-left corner at (`x`, `y`), clipped.
    pub fn paste(&mut self, src: &Bgr, x: usize, y: usize) {
        if x >= self.width || y >= self.height {
            return;
        }
        let w = src.width.min(self.width - x);
        let h = src.height.min(self.height - y);
        for row in 0..h {
            let dst = ((y + row) * self.width + x) * 3;
            self.data[dst..dst + w * 3].copy_from_slice(&src.row(row)[..w * 3]);
        }
    }

    /// Encodes as a baseline JPEG of the given quality (1–100).
    pub fn to_jpeg(&self, quality: u8) -> Result<Vec<u8>, RasterError> {
        let (Ok(w), Ok(h)) = (u16::try_from(self.width), u16::try_from(self.height)) else {
            return Err(RasterError::Jpeg(format!(
                "{}x{} is over JPEG's 65,535 pixels per side",
                self.width, self.height
            )));
        };
        let mut out = Vec::with_capacity(self.data.len() / 8);
        let encoder = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
        encoder
            .encode(&self.data, w, h, jpeg_encoder::ColorType::Bgr)
            .map_err(|e| RasterError::Jpeg(e.to_string()))?;
        Ok(out)
    }
}

/// `cvRound`: round half to even, as `lrint` does.
fn cv_round(v: f32) -> i32 {
    v.round_ties_even() as i32
}

fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// The homography that maps the destination rectangle (0,0)-(w,h) corners onto `quad`, as a
/// row-major 3 × 3 matrix; `None` when the quad is degenerate.
fn perspective_from_rect(w: f64, h: f64, quad: [[f32; 2]; 4]) -> Option<[f64; 9]> {
    let dst = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]];
    // Solve the 8 × 8 system for (a..h) with i = 1: src = H · dst.
    let mut a = [[0f64; 9]; 8];
    for k in 0..4 {
        let (x, y) = (dst[k][0], dst[k][1]);
        let (u, v) = (f64::from(quad[k][0]), f64::from(quad[k][1]));
        a[2 * k] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
        a[2 * k + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
    }
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (v, p) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                    *v -= f * p;
                }
            }
        }
    }
    let mut m = [0f64; 9];
    for i in 0..8 {
        m[i] = a[i][8] / a[i][i];
    }
    m[8] = 1.0;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: usize, h: usize) -> Bgr {
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[
                    (x * 7 % 256) as u8,
                    (y * 13 % 256) as u8,
                    ((x + y) % 256) as u8,
                ]);
            }
        }
        Bgr::from_raw(w, h, data).unwrap()
    }

    #[test]
    fn resize_keeps_constant_images_constant() {
        let img = Bgr::filled(37, 11, [10, 200, 255]);
        for (w, h) in [(100, 30), (5, 3), (37, 48), (1, 1)] {
            let out = img.resize_linear(w, h);
            assert_eq!((out.width(), out.height()), (w, h));
            assert!(out.data().chunks(3).all(|p| p == [10, 200, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn resize_matches_opencv_on_a_known_case() {
        // cv2.resize(np.array([[0, 100]], np.uint8), (4, 1)) == [[0, 25, 75, 100]]
        let mut data = Vec::new();
        for v in [0u8, 100] {
            data.extend_from_slice(&[v, v, v]);
        }
        let img = Bgr::from_raw(2, 1, data).unwrap();
        let out = img.resize_linear(4, 1);
        let firsts: Vec<u8> = out.data().chunks(3).map(|p| p[0]).collect();
        assert_eq!(firsts, vec![0, 25, 75, 100]);
    }

    #[test]
    fn axis_aligned_warp_is_a_crop_and_rotation_round_trips() {
        let img = gradient(40, 30);
        let quad = [[5.0, 4.0], [25.0, 4.0], [25.0, 14.0], [5.0, 14.0]];
        assert_eq!(img.warp_quad(quad, 20, 10), img.crop(5, 4, 20, 10));
        // A non-integral quad goes through the general path and stays close to the crop.
        let quad = [[5.0, 4.0], [25.0, 4.0], [25.0, 14.0], [5.0, 14.000_01]];
        let warped = img.warp_quad(quad, 20, 10);
        let crop = img.crop(5, 4, 20, 10);
        let max_diff = warped
            .data()
            .iter()
            .zip(crop.data())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(max_diff <= 1, "{max_diff}");
        let r = img.rotate90_ccw();
        assert_eq!((r.width(), r.height()), (30, 40));
        assert_eq!(r.rotate90_ccw().rotate90_ccw().rotate90_ccw(), img);
    }

    #[test]
    fn jpeg_encodes_and_refuses_huge_sides() {
        let jpeg = gradient(64, 48).to_jpeg(85).unwrap();
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let wide = Bgr::filled(70_000, 1, [0, 0, 0]);
        assert!(wide.to_jpeg(80).is_err());
    }
}
