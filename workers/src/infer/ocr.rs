//! PP-OCRv4 text detection and recognition, with the pre- and post-processing of
//! `rapidocr-onnxruntime` 1.4.4 (whose models these are), so that the same image gives the
//! same text.
//!
//! For one BGR image:
//! 1. **Prepare** (rapidocr's `preprocess` and letterbox): shrink so the long side is at most
//!    2000, grow so the short side is at least 30; pad top and bottom when the image is very
//!    flat (height ≤ 30, or wider than 8 × its height).
//! 2. **Detect**: scale so the short side is 736 (when it is shorter), each side rounded to a
//!    multiple of 32 (`round(int(side * ratio) / 32) * 32`: 640 × 360 becomes 1312 × 736),
//!    bilinearly; normalise `(x / 255 − 0.5) / 0.5`, CHW. The model returns a probability
//!    map. DB post-processing: threshold at 0.3, dilate 2 × 2, take connected regions; for
//!    each, the minimum-area rectangle (skipped when its short side is under 3), scored by
//!    the mean probability inside it (kept at ≥ 0.5), grown by `area × 1.6 / perimeter`
//!    (kept when its short side is at least 5), scaled back to the image, clipped, and
//!    dropped when a side is 3 pixels or less. Boxes are sorted in reading order.
//! 3. **Recognise**: crop each box (a perspective crop; rotated 90° when it is 1.5 × taller
//!    than wide), sort the crops by aspect ratio and run them in batches of 6, each crop
//!    resized to height 48 and width `min(ceil(48 × w / h), W)` with
//!    `W = int(48 × max(320 / 48, widest ratio in the batch))`, normalised the same way and
//!    zero-padded on the right. CTC decoding: the argmax at each step, repeats merged, index
//!    0 (blank) dropped; the classes are `["blank"]` + the model's `character` metadata
//!    lines + `[" "]`. The confidence is the mean probability of the kept steps.
//! 4. Results under 0.5 confidence are dropped, and boxes are mapped back to the original
//!    image.
//!
//! Not done: rapidocr's text-direction classifier (`use_cls`). Video frames are upright, and
//! the benchmark's Python reference runs with `use_cls=False` to match.

use std::path::Path;

use ndarray::{Array4, ArrayView2, Axis};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use crate::infer::geometry::{
    self, MiniBox, Point, box_score, mini_box, order_clockwise, regions, sort_reading_order, unclip,
};
use crate::infer::{InferError, check_io};
use crate::limits::{Deadline, Stop};
use crate::native::Model;
use crate::raster::Bgr;

const MAX_SIDE: usize = 2000;
const MIN_SIDE: usize = 30;
const MIN_HEIGHT: usize = 30;
const WIDTH_HEIGHT_RATIO: f32 = 8.0;
const DET_LIMIT_SIDE: usize = 736;
const DET_THRESH: f32 = 0.3;
const BOX_THRESH: f32 = 0.5;
const MAX_CANDIDATES: usize = 1000;
const UNCLIP_RATIO: f32 = 1.6;
const MIN_SIZE: f32 = 3.0;
const REC_HEIGHT: usize = 48;
const REC_WIDTH: usize = 320;
const REC_BATCH: usize = 6;
const TEXT_SCORE: f32 = 0.5;

/// A line of text found in an image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TextLine {
    /// The text.
    pub text: String,
    /// Mean probability of its characters.
    pub confidence: f32,
    /// Its box in the image, clockwise from the top-left corner, in pixels.
    #[serde(rename = "box")]
    pub bbox: [Point; 4],
}

/// Why OCR of an image stopped.
#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    /// A model run failed.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The job's deadline passed or its pool is stopping.
    #[error("stopped: {0:?}")]
    Stopped(Stop),
}

/// PP-OCRv4 detection and recognition sessions, and the recogniser's classes.
pub struct Ocr {
    det: Session,
    rec: Session,
    classes: Vec<String>,
}

impl Ocr {
    /// Wraps the two sessions, reading the character list from the recogniser's metadata.
    pub fn new(
        det: Session,
        det_path: &Path,
        rec: Session,
        rec_path: &Path,
    ) -> Result<Ocr, InferError> {
        check_io(&det, Model::OcrDetection, det_path, &["x"], &[])?;
        check_io(&rec, Model::OcrRecognition, rec_path, &["x"], &[])?;
        let wrong = |message: String| InferError::WrongModel {
            model: Model::OcrRecognition,
            path: rec_path.to_path_buf(),
            message,
        };
        let characters = rec
            .metadata()
            .map_err(|e| wrong(e.to_string()))?
            .custom("character")
            .ok_or_else(|| wrong("no `character` metadata".into()))?;
        let mut classes = Vec::with_capacity(6625);
        classes.push(String::new()); // blank
        classes.extend(characters.lines().map(str::to_owned));
        classes.push(" ".to_owned());
        Ok(Ocr { det, rec, classes })
    }

    /// Finds and reads the text in `image` (BGR). `deadline` is checked between model runs.
    pub fn read(&mut self, image: &Bgr, deadline: &Deadline) -> Result<Vec<TextLine>, OcrError> {
        if image.width() == 0 || image.height() == 0 {
            return Ok(Vec::new());
        }
        let prepared = prepare(image);
        deadline.check().map_err(OcrError::Stopped)?;
        let boxes = self.detect(&prepared.image)?;
        if boxes.is_empty() {
            return Ok(Vec::new());
        }
        deadline.check().map_err(OcrError::Stopped)?;
        let crops: Vec<Bgr> = boxes.iter().map(|b| crop(&prepared.image, b)).collect();
        let texts = self.recognise(&crops, deadline)?;
        Ok(boxes
            .into_iter()
            .zip(texts)
            .filter(|(_, (_, confidence))| *confidence >= TEXT_SCORE)
            .map(|(bbox, (text, confidence))| TextLine {
                text,
                confidence,
                bbox: prepared.to_original(bbox, image),
            })
            .collect())
    }

    /// Detection: boxes in the prepared image's coordinates, in reading order.
    fn detect(&mut self, image: &Bgr) -> Result<Vec<[Point; 4]>, InferError> {
        let (h, w) = (image.height(), image.width());
        let ratio = if h.min(w) < DET_LIMIT_SIDE {
            DET_LIMIT_SIDE as f64 / h.min(w) as f64
        } else {
            1.0
        };
        let round32 = |side: usize| {
            let scaled = (side as f64 * ratio) as usize;
            (py_round(scaled as f64 / 32.0) * 32.0) as usize
        };
        let (rh, rw) = (round32(h), round32(w));
        if rh == 0 || rw == 0 {
            return Ok(Vec::new());
        }
        let resized = image.resize_linear(rw, rh);
        let input = normalise_chw(&resized, rw);
        let err = |e: ort::Error| InferError::run(Model::OcrDetection, e);
        let tensor = TensorRef::from_array_view(&input).map_err(err)?;
        let outputs = self.det.run(ort::inputs![tensor]).map_err(err)?;
        let (shape, map) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        let (mh, mw) = match dims.as_slice() {
            [1, 1, mh, mw] => (*mh as usize, *mw as usize),
            other => {
                return Err(InferError::run(
                    Model::OcrDetection,
                    format!("unexpected output shape {other:?}"),
                ));
            }
        };
        let mut boxes = boxes_from_map(map, mw, mh, w, h);
        sort_reading_order(&mut boxes, |b| b[0]);
        Ok(boxes)
    }

    /// Recognition of crops; one (text, confidence) per crop, in the crops' order.
    fn recognise(
        &mut self,
        crops: &[Bgr],
        deadline: &Deadline,
    ) -> Result<Vec<(String, f32)>, OcrError> {
        let ratios: Vec<f32> = crops
            .iter()
            .map(|c| c.width() as f32 / c.height().max(1) as f32)
            .collect();
        let mut order: Vec<usize> = (0..crops.len()).collect();
        order.sort_by(|&a, &b| ratios[a].total_cmp(&ratios[b]));
        let mut results = vec![(String::new(), 0.0f32); crops.len()];
        for batch in order.chunks(REC_BATCH) {
            deadline.check().map_err(OcrError::Stopped)?;
            let max_ratio = batch
                .iter()
                .map(|&i| ratios[i])
                .fold(REC_WIDTH as f32 / REC_HEIGHT as f32, f32::max);
            let width = (REC_HEIGHT as f32 * max_ratio) as usize;
            let mut input = Array4::<f32>::zeros((batch.len(), 3, REC_HEIGHT, width));
            for (slot, &i) in batch.iter().enumerate() {
                let crop = &crops[i];
                let w = ((REC_HEIGHT as f32 * ratios[i]).ceil() as usize).clamp(1, width);
                let resized = crop.resize_linear(w, REC_HEIGHT);
                let mut planes = input.index_axis_mut(Axis(0), slot);
                for (y, row) in (0..REC_HEIGHT).map(|y| (y, resized.row(y))) {
                    for x in 0..w {
                        for c in 0..3 {
                            planes[[c, y, x]] = normalise(row[x * 3 + c]);
                        }
                    }
                }
            }
            let err = |e: ort::Error| InferError::run(Model::OcrRecognition, e);
            let tensor = TensorRef::from_array_view(&input).map_err(err)?;
            let outputs = self.rec.run(ort::inputs![tensor]).map_err(err)?;
            let probs = outputs[0].try_extract_array::<f32>().map_err(err)?;
            let probs = probs
                .into_dimensionality::<ndarray::Ix3>()
                .map_err(|e| InferError::run(Model::OcrRecognition, e))?;
            for (slot, &i) in batch.iter().enumerate() {
                results[i] = ctc_decode(probs.index_axis(Axis(0), slot), &self.classes);
            }
        }
        Ok(results)
    }
}

/// Python's `round`: half to even.
fn py_round(v: f64) -> f64 {
    v.round_ties_even()
}

fn normalise(v: u8) -> f32 {
    (f32::from(v) / 255.0 - 0.5) / 0.5
}

/// HWC BGR bytes to a normalised NCHW tensor.
fn normalise_chw(image: &Bgr, width: usize) -> Array4<f32> {
    let height = image.height();
    let mut out = Array4::<f32>::zeros((1, 3, height, width));
    let plane = height * width;
    if let Some(buf) = out.as_slice_mut() {
        for (i, px) in image.data().chunks_exact(3).enumerate() {
            buf[i] = normalise(px[0]);
            buf[plane + i] = normalise(px[1]);
            buf[2 * plane + i] = normalise(px[2]);
        }
    }
    out
}

/// DB post-processing of a `mw` × `mh` probability map into boxes in a `w` × `h` image.
fn boxes_from_map(map: &[f32], mw: usize, mh: usize, w: usize, h: usize) -> Vec<[Point; 4]> {
    if map.len() < mw * mh {
        return Vec::new();
    }
    // Threshold, then dilate with a 2 x 2 kernel anchored at its centre (OpenCV's default
    // for an even kernel): a pixel is set when it or its left, upper or upper-left neighbour
    // is.
    let seg: Vec<u8> = map[..mw * mh]
        .iter()
        .map(|&p| u8::from(p > DET_THRESH))
        .collect();
    let mut mask = vec![0u8; mw * mh];
    for y in 0..mh {
        for x in 0..mw {
            let at = |dx: usize, dy: usize| seg[(y - dy) * mw + (x - dx)];
            let mut v = at(0, 0);
            if x > 0 {
                v |= at(1, 0);
            }
            if y > 0 {
                v |= at(0, 1);
                if x > 0 {
                    v |= at(1, 1);
                }
            }
            mask[y * mw + x] = v;
        }
    }
    let mut boxes = Vec::new();
    for region in regions(&mask, mw, mh).into_iter().take(MAX_CANDIDATES) {
        let mini = mini_box(&region);
        if mini.short_side < MIN_SIZE {
            continue;
        }
        if box_score(map, mw, mh, &mini.points) < BOX_THRESH {
            continue;
        }
        let grown = geometry::order_mini_box(unclip(&mini, UNCLIP_RATIO));
        if grown.short_side < MIN_SIZE + 2.0 {
            continue;
        }
        let scale = |MiniBox { points, .. }: MiniBox| {
            points.map(|p| {
                [
                    py_round(f64::from(p[0]) / mw as f64 * w as f64).clamp(0.0, w as f64) as i32
                        as f32,
                    py_round(f64::from(p[1]) / mh as f64 * h as f64).clamp(0.0, h as f64) as i32
                        as f32,
                ]
            })
        };
        // filter_tag_det_res: order, clip to the image, drop tiny boxes.
        let b = order_clockwise(scale(grown)).map(|p| {
            [
                p[0].clamp(0.0, (w - 1) as f32).trunc(),
                p[1].clamp(0.0, (h - 1) as f32).trunc(),
            ]
        });
        let dist = |a: Point, c: Point| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt();
        if dist(b[0], b[1]) as i32 <= 3 || dist(b[0], b[3]) as i32 <= 3 {
            continue;
        }
        boxes.push(b);
    }
    boxes
}

/// rapidocr's `get_rotate_crop_image`.
fn crop(image: &Bgr, b: &[Point; 4]) -> Bgr {
    let dist = |a: Point, c: Point| ((a[0] - c[0]).powi(2) + (a[1] - c[1]).powi(2)).sqrt();
    let w = dist(b[0], b[1]).max(dist(b[2], b[3])) as usize;
    let h = dist(b[0], b[3]).max(dist(b[1], b[2])) as usize;
    let out = image.warp_quad(*b, w.max(1), h.max(1));
    if out.height() as f32 / out.width().max(1) as f32 >= 1.5 {
        out.rotate90_ccw()
    } else {
        out
    }
}

/// CTC greedy decoding of one `[steps, classes]` probability matrix: the argmax of each
/// step (the first one on ties, as numpy's), repeats merged, blanks (index 0) dropped. The
/// confidence is the mean of the kept steps' maxima (0 when nothing is kept).
fn ctc_decode(probs: ArrayView2<'_, f32>, classes: &[String]) -> (String, f32) {
    let mut text = String::new();
    let mut sum = 0f32;
    let mut kept = 0usize;
    let mut previous = usize::MAX;
    for step in probs.rows() {
        let mut best = (0usize, f32::NEG_INFINITY);
        for (i, &p) in step.iter().enumerate() {
            if p > best.1 {
                best = (i, p);
            }
        }
        let (index, p) = best;
        if index != previous && index != 0 {
            if let Some(class) = classes.get(index) {
                text.push_str(class);
            }
            sum += p;
            kept += 1;
        }
        previous = index;
    }
    let confidence = if kept == 0 { 0.0 } else { sum / kept as f32 };
    (text, confidence)
}

/// The image detection runs on, and how to map its coordinates back.
struct Prepared {
    image: Bgr,
    /// Original size / prepared size, per axis (rapidocr's `ratio_w`, `ratio_h`).
    ratio: (f32, f32),
    /// Rows of padding added on top (the letterbox).
    pad_top: f32,
}

impl Prepared {
    fn to_original(&self, b: [Point; 4], original: &Bgr) -> [Point; 4] {
        b.map(|p| {
            let x = (p[0] * self.ratio.0).clamp(0.0, original.width() as f32);
            let y = ((p[1] - self.pad_top) * self.ratio.1).clamp(0.0, original.height() as f32);
            [x, y]
        })
    }
}

/// rapidocr's `preprocess` and `maybe_add_letterbox`.
fn prepare(image: &Bgr) -> Prepared {
    let (h, w) = (image.height(), image.width());
    let mut img = None;
    let mut ratio = (1.0f32, 1.0f32);
    let resize_to = |side_ratio: f64| {
        let rh = (py_round((h as f64 * side_ratio) as usize as f64 / 32.0) * 32.0) as usize;
        let rw = (py_round((w as f64 * side_ratio) as usize as f64 / 32.0) * 32.0) as usize;
        (rw.max(32), rh.max(32))
    };
    if h.max(w) > MAX_SIDE {
        let (rw, rh) = resize_to(MAX_SIDE as f64 / h.max(w) as f64);
        img = Some(image.resize_linear(rw, rh));
        ratio = (w as f32 / rw as f32, h as f32 / rh as f32);
    }
    let current = img.as_ref().unwrap_or(image);
    let (ch, cw) = (current.height(), current.width());
    if ch.min(cw) < MIN_SIDE {
        let side_ratio = MIN_SIDE as f64 / ch.min(cw) as f64;
        let rh = (py_round((ch as f64 * side_ratio) as usize as f64 / 32.0) * 32.0) as usize;
        let rw = (py_round((cw as f64 * side_ratio) as usize as f64 / 32.0) * 32.0) as usize;
        let (rw, rh) = (rw.max(32), rh.max(32));
        let resized = current.resize_linear(rw, rh);
        // rapidocr replaces the ratio with this step's (it assumes one step applies).
        ratio = (cw as f32 / rw as f32, ch as f32 / rh as f32);
        img = Some(resized);
    }
    let current = img.unwrap_or_else(|| image.clone());
    let (ch, cw) = (current.height(), current.width());
    let flat = cw as f32 / ch as f32 > WIDTH_HEIGHT_RATIO;
    if ch <= MIN_HEIGHT || flat {
        let new_h = ((cw as f32 / WIDTH_HEIGHT_RATIO) as usize).max(MIN_HEIGHT) * 2;
        let pad = new_h.abs_diff(ch) / 2;
        let mut padded = Bgr::filled(cw, ch + 2 * pad, [0, 0, 0]);
        padded.paste(&current, 0, pad);
        return Prepared {
            image: padded,
            ratio,
            pad_top: pad as f32,
        };
    }
    Prepared {
        image: current,
        ratio,
        pad_top: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let classes: Vec<String> = ["", "H", "I", " "]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        // Steps: H H blank I I blank blank I
        let steps = [1, 1, 0, 2, 2, 0, 0, 2];
        let mut probs = Array2::<f32>::zeros((steps.len(), classes.len()));
        for (t, &c) in steps.iter().enumerate() {
            probs[[t, c]] = 0.9;
            probs[[t, (c + 1) % 4]] = 0.1;
        }
        let (text, conf) = ctc_decode(probs.view(), &classes);
        assert_eq!(text, "HII");
        assert!((conf - 0.9).abs() < 1e-6);
        let (text, conf) = ctc_decode(Array2::<f32>::zeros((0, 4)).view(), &classes);
        assert_eq!((text.as_str(), conf), ("", 0.0));
    }

    #[test]
    fn detection_sizes_follow_rapidocr() {
        // The det input for 640x360 is 1312x736 and for 1280x720 it is 1312x736 too.
        for ((w, h), expected) in [
            ((640, 360), (1312, 736)),
            ((1280, 720), (1312, 736)),
            ((1920, 1080), (1920, 1088)),
        ] {
            let ratio = if h.min(w) < DET_LIMIT_SIDE {
                DET_LIMIT_SIDE as f64 / h.min(w) as f64
            } else {
                1.0
            };
            let r = |side: usize| {
                (py_round(((side as f64 * ratio) as usize) as f64 / 32.0) * 32.0) as usize
            };
            assert_eq!((r(w), r(h)), expected);
        }
    }

    #[test]
    fn a_synthetic_map_gives_one_box_in_image_coordinates() {
        // A 64x32 map with a text-like blob; the image is twice as large.
        let (mw, mh) = (64, 32);
        let mut map = vec![0f32; mw * mh];
        for y in 10..20 {
            for x in 8..50 {
                map[y * mw + x] = 0.9;
            }
        }
        let boxes = boxes_from_map(&map, mw, mh, 128, 64);
        assert_eq!(boxes.len(), 1);
        let b = boxes[0];
        // Grown by area*1.6/perimeter around the dilated blob, scaled by 2.
        assert!(b[0][0] < 16.0 && b[1][0] > 100.0, "{b:?}");
        assert!(b[0][1] < 20.0 && b[2][1] > 40.0, "{b:?}");
        assert_eq!(b[0][1], b[1][1]);
    }

    #[test]
    fn flat_images_are_letterboxed_and_mapped_back() {
        // 400 x 20: grown so the short side is at least 30 (608 x 32, sides rounded to 32),
        // then padded because it is more than 8 times wider than high.
        let img = Bgr::filled(400, 20, [255, 255, 255]);
        let p = prepare(&img);
        assert_eq!((p.image.width(), p.image.height()), (608, 32 + 2 * 60));
        assert_eq!(p.pad_top, 60.0);
        let back = p.to_original([[304.0, 60.0 + 16.0]; 4], &img);
        assert_eq!(back[0], [200.0, 10.0]);
    }
}
