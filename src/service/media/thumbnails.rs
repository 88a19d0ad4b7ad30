//! Thumbnails of JPEG, PNG, GIF and WebP images, with the `image` crate.
//!
//! The requested size is rounded up to one of the sizes the spec suggests (32x32 and 96x96
//! cropped, 320x240, 640x480 and 800x600 scaled), so a few thumbnails per image serve every
//! client and can be cached. `scale` fits the image into that box keeping its aspect ratio;
//! `crop` fills the box and cuts the overflow, centred. Thumbnails are never larger than the
//! original, which is returned as it is when it already fits the requested size.
//!
//! Every decode runs under [`image::Limits`] (dimensions and memory), and animations are bounded
//! in frames and total pixels, so a hostile image ("decompression bomb") fails cleanly with
//! [`ThumbnailError::TooLarge`] instead of exhausting memory. These functions block: call them
//! from the blocking pool.

use std::io::Cursor;

use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits,
    codecs::{gif::GifDecoder, webp::WebPDecoder},
    imageops::FilterType,
};

/// Largest width or height of an image the server decodes.
const MAX_DIMENSION: u32 = 10_000;
/// Most memory one decode may allocate.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// Most frames of an animation that are thumbnailed (later frames are dropped).
const MAX_FRAMES: usize = 100;
/// Most pixels decoded over all frames of one animation (CPU bound); later frames are dropped.
const MAX_ANIMATION_PIXELS: u64 = 20_000_000;

/// How the thumbnail is fitted to the requested size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Scale,
    Crop,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Scale => "scale",
            Method::Crop => "crop",
        }
    }
}

/// What the client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

/// The sizes thumbnails are made in, as the spec suggests.
const SIZES: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// A made thumbnail.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

/// The result of thumbnailing.
#[derive(Debug)]
pub enum Outcome {
    /// The original already fits the requested size: serve it as it is.
    Original,
    Thumbnail(Thumbnail),
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// Not an image of a supported format, or a broken one.
    #[error("cannot thumbnail this content: {0}")]
    Unsupported(String),
    /// Over the decoding limits.
    #[error("the image is too large to thumbnail: {0}")]
    TooLarge(String),
}

impl From<ImageError> for ThumbnailError {
    fn from(error: ImageError) -> Self {
        match error {
            ImageError::Limits(e) => ThumbnailError::TooLarge(e.to_string()),
            other => ThumbnailError::Unsupported(other.to_string()),
        }
    }
}

/// The box a request is served from: the smallest standard size of the same method that covers
/// the request, else any standard size that does, else the request itself (still bounded by the
/// original, since nothing is ever upscaled).
pub fn target_box(spec: &Spec) -> (u32, u32) {
    let covers = |&&(w, h, _): &&(u32, u32, Method)| w >= spec.width && h >= spec.height;
    SIZES
        .iter()
        .filter(|size| size.2 == spec.method)
        .find(covers)
        .or_else(|| SIZES.iter().find(covers))
        .map(|&(w, h, _)| (w, h))
        .unwrap_or((spec.width.max(1), spec.height.max(1)))
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

/// A reader of an in-memory image.
type Reader<'a> = ImageReader<Cursor<&'a [u8]>>;

fn reader(bytes: &[u8]) -> Result<(Reader<'_>, ImageFormat), ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::Unsupported(e.to_string()))?;
    let format = match reader.format() {
        Some(format @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP)) => format,
        _ => return Err(ThumbnailError::Unsupported("not a JPEG, PNG, GIF or WebP image".into())),
    };
    reader.limits(limits());
    Ok((reader, format))
}

/// The width and height of an image, read from its header only.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ThumbnailError> {
    Ok(reader(bytes)?.0.into_dimensions()?)
}

/// Makes the thumbnail `spec` asks for from the image in `bytes`.
pub fn make(bytes: &[u8], spec: &Spec) -> Result<Outcome, ThumbnailError> {
    let (original_width, original_height) = dimensions(bytes)?;
    if original_width <= spec.width && original_height <= spec.height {
        return Ok(Outcome::Original);
    }
    let (_, format) = reader(bytes)?;
    let geometry = Geometry::new((original_width, original_height), target_box(spec), spec.method);
    if geometry.is_identity() {
        return Ok(Outcome::Original);
    }
    if spec.animated
        && matches!(format, ImageFormat::Gif | ImageFormat::WebP)
        && let Some(thumbnail) = animated(bytes, format, &geometry)?
    {
        return Ok(Outcome::Thumbnail(thumbnail));
    }
    let (reader, _) = reader(bytes)?;
    let image = reader.decode()?;
    let image = geometry.apply(&image);
    let (width, height) = (image.width(), image.height());
    let mut out = Vec::new();
    let content_type = if format == ImageFormat::Jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        DynamicImage::ImageRgb8(image.to_rgb8()).write_with_encoder(encoder)?;
        "image/jpeg"
    } else {
        image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)?;
        "image/png"
    };
    Ok(Outcome::Thumbnail(Thumbnail { bytes: out, content_type, width, height }))
}

/// How an original becomes its thumbnail: an optional centred crop, then an optional resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    original: (u32, u32),
    /// (x, y, width, height) cut from the original.
    crop: (u32, u32, u32, u32),
    /// Size of the result.
    size: (u32, u32),
}

impl Geometry {
    fn new((ow, oh): (u32, u32), (bw, bh): (u32, u32), method: Method) -> Self {
        let (ow64, oh64, bw64, bh64) = (u64::from(ow), u64::from(oh), u64::from(bw), u64::from(bh));
        let full = (0, 0, ow, oh);
        let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).max(1);
        match method {
            Method::Scale => {
                if ow <= bw && oh <= bh {
                    return Self { original: (ow, oh), crop: full, size: (ow, oh) };
                }
                // Fit into the box: the tighter of the two ratios wins.
                let size = if ow64 * bh64 >= oh64 * bw64 {
                    (bw, narrow((oh64 * bw64).div_ceil(ow64).min(bh64)))
                } else {
                    (narrow((ow64 * bh64).div_ceil(oh64).min(bw64)), bh)
                };
                Self { original: (ow, oh), crop: full, size }
            }
            Method::Crop => {
                // The largest region of the box's aspect ratio inside the original, centred.
                let (cw, ch) = if ow64 * bh64 >= oh64 * bw64 {
                    (narrow((oh64 * bw64 / bh64).min(ow64)), oh)
                } else {
                    (ow, narrow((ow64 * bh64 / bw64).min(oh64)))
                };
                let crop = ((ow - cw) / 2, (oh - ch) / 2, cw, ch);
                // Shrink it to the box when it is larger; never enlarge it.
                let size = if cw > bw { (bw, bh) } else { (cw, ch) };
                Self { original: (ow, oh), crop, size }
            }
        }
    }

    fn is_identity(&self) -> bool {
        self.size == self.original && self.crop == (0, 0, self.original.0, self.original.1)
    }

    fn apply(&self, image: &DynamicImage) -> DynamicImage {
        let (x, y, w, h) = self.crop;
        let cropped = if self.crop == (0, 0, self.original.0, self.original.1) {
            image.clone()
        } else {
            image.crop_imm(x, y, w, h)
        };
        if (cropped.width(), cropped.height()) == self.size {
            cropped
        } else {
            cropped.resize_exact(self.size.0, self.size.1, FilterType::Triangle)
        }
    }
}

/// An animated thumbnail of an animated GIF or WebP, or `None` when the image has a single
/// frame (or too large frames to animate within the budget). Frames are decoded, resized and
/// encoded one at a time, so at most two full-size frames are in memory.
fn animated(bytes: &[u8], format: ImageFormat, geometry: &Geometry) -> Result<Option<Thumbnail>, ThumbnailError> {
    let frame_pixels = u64::from(geometry.original.0) * u64::from(geometry.original.1);
    let budget = usize::try_from(MAX_ANIMATION_PIXELS / frame_pixels.max(1)).unwrap_or(usize::MAX).min(MAX_FRAMES);
    if budget < 2 {
        return Ok(None);
    }
    let frames = match format {
        ImageFormat::Gif => {
            let mut decoder = GifDecoder::new(Cursor::new(bytes))?;
            decoder.set_limits(limits())?;
            decoder.into_frames()
        }
        ImageFormat::WebP => {
            let mut decoder = WebPDecoder::new(Cursor::new(bytes))?;
            if !decoder.has_animation() {
                return Ok(None);
            }
            decoder.set_limits(limits())?;
            decoder.into_frames()
        }
        _ => return Ok(None),
    };
    let mut frames = frames.take(budget);
    let (Some(first), Some(second)) = (frames.next().transpose()?, frames.next().transpose()?) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 20);
        encoder.set_repeat(image::codecs::gif::Repeat::Infinite)?;
        for frame in [Ok(first), Ok(second)].into_iter().chain(frames) {
            let frame = frame?;
            let delay = frame.delay();
            let image = DynamicImage::ImageRgba8(frame.into_buffer());
            if (image.width(), image.height()) != geometry.original {
                return Err(ThumbnailError::Unsupported("animation frame of unexpected size".into()));
            }
            let resized = geometry.apply(&image).to_rgba8();
            encoder.encode_frame(Frame::from_parts(resized, 0, 0, delay))?;
        }
    }
    Ok(Some(Thumbnail { bytes: out, content_type: "image/gif", width: geometry.size.0, height: geometry.size.1 }))
}

#[cfg(test)]
mod tests {
    use image::{Rgba, RgbaImage};

    use super::*;

    fn spec(width: u32, height: u32, method: Method) -> Spec {
        Spec { width, height, method, animated: false }
    }

    fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
        let image = RgbaImage::from_fn(width, height, |x, y| {
            Rgba([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x ^ y) % 256) as u8, 255])
        });
        let image = if format == ImageFormat::Jpeg {
            DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(image).to_rgb8())
        } else {
            DynamicImage::ImageRgba8(image)
        };
        let mut out = Vec::new();
        image.write_to(&mut Cursor::new(&mut out), format).unwrap();
        out
    }

    fn animated_gif(width: u32, height: u32, frames: u8) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 30);
            for i in 0..frames {
                let buffer = RgbaImage::from_pixel(width, height, Rgba([i * 40, 0, 255 - i * 40, 255]));
                encoder.encode_frame(Frame::new(buffer)).unwrap();
            }
        }
        out
    }

    fn thumbnail(bytes: &[u8], spec: &Spec) -> Thumbnail {
        match make(bytes, spec).unwrap() {
            Outcome::Thumbnail(t) => t,
            Outcome::Original => panic!("expected a thumbnail"),
        }
    }

    #[test]
    fn request_sizes_round_up_to_standard_sizes() {
        assert_eq!(target_box(&spec(20, 20, Method::Crop)), (32, 32));
        assert_eq!(target_box(&spec(50, 40, Method::Crop)), (96, 96));
        assert_eq!(target_box(&spec(100, 100, Method::Scale)), (320, 240));
        assert_eq!(target_box(&spec(600, 400, Method::Scale)), (640, 480));
        assert_eq!(target_box(&spec(300, 300, Method::Crop)), (640, 480));
        assert_eq!(target_box(&spec(2000, 1000, Method::Scale)), (2000, 1000));
    }

    #[test]
    fn scale_and_crop_have_the_expected_bounds_for_every_format() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif, ImageFormat::WebP] {
            let bytes = image_bytes(1000, 500, format);
            let scaled = thumbnail(&bytes, &spec(320, 240, Method::Scale));
            assert_eq!((scaled.width, scaled.height), (320, 160), "{format:?}");
            let decoded = image::load_from_memory(&scaled.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (320, 160), "{format:?}");
            let cropped = thumbnail(&bytes, &spec(96, 96, Method::Crop));
            assert_eq!((cropped.width, cropped.height), (96, 96), "{format:?}");
            let decoded = image::load_from_memory(&cropped.bytes).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (96, 96), "{format:?}");
            let expected = if format == ImageFormat::Jpeg { "image/jpeg" } else { "image/png" };
            assert_eq!(scaled.content_type, expected);
        }
    }

    #[test]
    fn thumbnails_are_never_larger_than_the_original() {
        let bytes = image_bytes(50, 20, ImageFormat::Png);
        assert!(matches!(make(&bytes, &spec(96, 96, Method::Crop)).unwrap(), Outcome::Original));
        // Wider than the request but not as tall: cropped to the box's aspect, not enlarged.
        let cropped = thumbnail(&bytes, &spec(32, 32, Method::Crop));
        assert_eq!((cropped.width, cropped.height), (20, 20));
        // Larger than the request, but inside the standard box it rounds up to: nothing to shrink.
        let bytes = image_bytes(300, 100, ImageFormat::Png);
        assert!(matches!(make(&bytes, &spec(200, 90, Method::Scale)).unwrap(), Outcome::Original));
        // A request beyond every standard size and the original: the original.
        assert!(matches!(make(&bytes, &spec(5000, 5000, Method::Crop)).unwrap(), Outcome::Original));
    }

    #[test]
    fn animated_gifs_stay_animated_when_asked() {
        let bytes = animated_gif(200, 100, 3);
        let mut request = spec(96, 96, Method::Crop);
        request.animated = true;
        let thumb = thumbnail(&bytes, &request);
        assert_eq!(thumb.content_type, "image/gif");
        let frames = GifDecoder::new(Cursor::new(&thumb.bytes)).unwrap().into_frames().count();
        assert_eq!(frames, 3);
        request.animated = false;
        assert_eq!(thumbnail(&bytes, &request).content_type, "image/png");
    }

    #[test]
    fn bombs_and_garbage_fail_cleanly() {
        assert!(matches!(make(b"not an image", &spec(32, 32, Method::Crop)), Err(ThumbnailError::Unsupported(_))));
        // A PNG header claiming 60000x60000 pixels.
        let mut png = image_bytes(1, 1, ImageFormat::Png);
        png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        // With a valid checksum, so the decoder reads the size rather than rejecting the chunk.
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(make(&png, &spec(32, 32, Method::Crop)), Err(ThumbnailError::TooLarge(_))));
        // A GIF whose logical screen is 65535x65535.
        let mut gif = image_bytes(2, 2, ImageFormat::Gif);
        gif[6..10].copy_from_slice(&[0xff; 4]);
        let mut animated = spec(32, 32, Method::Crop);
        animated.animated = true;
        for request in [spec(32, 32, Method::Scale), animated] {
            assert!(matches!(make(&gif, &request), Err(ThumbnailError::TooLarge(_))), "{request:?}");
        }
    }

    /// CRC-32 (IEEE), as PNG chunks use.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    /// Random and mutated images through the thumbnailer: errors are fine, panics are not.
    #[test]
    fn fuzzed_images_never_panic() {
        // A small deterministic generator (xorshift), so failures reproduce.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds = [
            image_bytes(40, 30, ImageFormat::Png),
            image_bytes(40, 30, ImageFormat::Jpeg),
            image_bytes(40, 30, ImageFormat::Gif),
            image_bytes(40, 30, ImageFormat::WebP),
            animated_gif(40, 30, 3),
        ];
        let requests = [spec(32, 32, Method::Crop), spec(20, 10, Method::Scale), {
            let mut s = spec(32, 32, Method::Crop);
            s.animated = true;
            s
        }];
        let started = std::time::Instant::now();
        let mut cases = 0;
        for round in 0..2000 {
            for seed in &seeds {
                let mut bytes = seed.clone();
                match round % 4 {
                    // Flip a few random bytes.
                    0 | 1 => {
                        for _ in 0..1 + next() % 8 {
                            let i = (next() % bytes.len() as u64) as usize;
                            bytes[i] ^= (next() % 255 + 1) as u8;
                        }
                    }
                    // Truncate.
                    2 => bytes.truncate((next() % bytes.len() as u64) as usize),
                    // Keep the header, randomise the rest.
                    _ => {
                        for byte in bytes.iter_mut().skip(16) {
                            *byte = next() as u8;
                        }
                    }
                }
                let request = &requests[(next() % requests.len() as u64) as usize];
                let _ = make(&bytes, request);
                cases += 1;
            }
        }
        assert_eq!(cases, 10_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "fuzzing took {:?}", started.elapsed());
    }
}
