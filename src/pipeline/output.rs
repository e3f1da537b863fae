//! Writing result images: the format from the file name (PNG, JPEG, WebP), the parameters
//! that made the image in the file's own metadata (PNG text chunks; an XMP packet in JPEG
//! and WebP), atomically (a temporary file beside the target, then a rename).

use std::io::Write;
use std::path::Path;

use illume_dualvitok::image_io;
use image::RgbImage;

use super::PipelineError;

/// A format results can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// Lossless, metadata as text chunks (the default).
    Png,
    /// Lossy (quality 95), metadata as XMP in an APP1 segment.
    Jpeg,
    /// Lossless WebP, metadata as an XMP chunk.
    WebP,
}

/// The extensions accepted, as `--help` and errors list them.
pub const OUTPUT_EXTENSIONS: &str = ".png, .jpg/.jpeg or .webp";

impl ImageFormat {
    /// The format a file name asks for, by its extension (any case).
    pub fn from_path(path: &Path) -> Result<Self, PipelineError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("png") => Ok(Self::Png),
            Some("jpg" | "jpeg") => Ok(Self::Jpeg),
            Some("webp") => Ok(Self::WebP),
            _ => Err(output_error(
                path,
                format!("the format is chosen by the extension: give a name ending in {OUTPUT_EXTENSIONS}"),
            )),
        }
    }
}

/// Check, before any model runs, that a result can be written at `path`: a known
/// extension, not a directory, a directory that accepts a new file.
pub fn check_output(path: &Path) -> Result<ImageFormat, PipelineError> {
    let format = ImageFormat::from_path(path)?;
    image_io::check_writable(path)?;
    Ok(format)
}

/// Write `image` at `path` in the format its extension names, with `metadata`.
pub(crate) fn write_image(
    path: &Path,
    image: &RgbImage,
    metadata: &[(String, String)],
) -> Result<(), PipelineError> {
    let bytes = encode_image(ImageFormat::from_path(path)?, image, metadata)
        .map_err(|reason| output_error(path, reason))?;
    image_io::write_atomically(path, |file| {
        file.write_all(&bytes).map_err(|e| e.to_string())
    })
    .map_err(|reason| output_error(path, reason))
}

/// The file bytes of `image` in `format`, with `metadata`; the error says why not.
pub(crate) fn encode_image(
    format: ImageFormat,
    image: &RgbImage,
    metadata: &[(String, String)],
) -> Result<Vec<u8>, String> {
    match format {
        ImageFormat::Png => illume_diffusion::encode_png(image, metadata),
        ImageFormat::Jpeg => encode_jpeg(image, &xmp_packet(metadata)),
        ImageFormat::WebP => encode_webp(image, &xmp_packet(metadata)),
    }
}

fn encode_jpeg(image: &RgbImage, xmp: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)
        .encode_image(image)
        .map_err(|e| e.to_string())?;
    insert_jpeg_xmp(&mut bytes, xmp)?;
    Ok(bytes)
}

fn encode_webp(image: &RgbImage, xmp: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    let mut encoder = image_webp::WebPEncoder::new(&mut bytes);
    encoder.set_xmp_metadata(xmp.as_bytes().to_vec());
    encoder
        .encode(
            image.as_raw(),
            image.width(),
            image.height(),
            image_webp::ColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// The XMP namespace of the parameters (`illume:prompt`, `illume:cfg`, ...).
const XMP_NAMESPACE: &str = "https://github.com/illume-rs/illume-rs/ns/1.0/";

/// One `rdf:Description` holding every `(keyword, value)` as an attribute: `Software` as
/// `xmp:CreatorTool`, `illume.x` as `illume:x`.
fn xmp_packet(metadata: &[(String, String)]) -> String {
    let mut attributes = String::new();
    for (keyword, value) in metadata {
        let name = match keyword.strip_prefix("illume.") {
            Some(rest) => format!("illume:{}", xml_name(rest)),
            None if keyword == "Software" => "xmp:CreatorTool".into(),
            None => format!("illume:{}", xml_name(keyword)),
        };
        attributes.push_str(&format!("\n   {name}=\"{}\"", xml_escape(value)));
    }
    format!(
        "<?xpacket begin=\"\u{feff}\" id=\"W5M0MpCehiHzreSzNTczkc9d\"?>\n\
         <x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\n \
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\n  \
         <rdf:Description rdf:about=\"\"\n   \
         xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\"\n   \
         xmlns:illume=\"{XMP_NAMESPACE}\"{attributes}/>\n \
         </rdf:RDF>\n</x:xmpmeta>\n<?xpacket end=\"w\"?>"
    )
}

/// A keyword as an XML name: letters, digits, `_`, `-`, `.`; anything else becomes `_`.
fn xml_name(keyword: &str) -> String {
    keyword
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn xml_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            // XML 1.0 has no other control characters.
            c if (c as u32) < 0x20 => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The APP1 identifier of an XMP packet in JPEG.
const JPEG_XMP_ID: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";

/// Put the XMP packet in an APP1 segment after SOI and the JFIF APP0 segment (which must
/// come first).
fn insert_jpeg_xmp(jpeg: &mut Vec<u8>, xmp: &str) -> Result<(), String> {
    let length = 2 + JPEG_XMP_ID.len() + xmp.len();
    let length = u16::try_from(length).map_err(|_| {
        format!(
            "the parameters ({} bytes of XMP) do not fit in one JPEG segment: write a .png",
            xmp.len()
        )
    })?;
    if jpeg.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err("the JPEG encoder wrote no start-of-image marker".into());
    }
    let mut at = 2;
    if jpeg.get(2..4) == Some(&[0xFF, 0xE0]) {
        let app0 = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
        at = 4 + app0;
    }
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&length.to_be_bytes());
    segment.extend_from_slice(JPEG_XMP_ID);
    segment.extend_from_slice(xmp.as_bytes());
    jpeg.splice(at..at, segment);
    Ok(())
}

fn output_error(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Output {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("illume-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn picture() -> RgbImage {
        RgbImage::from_fn(48, 32, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 7) as u8, 90])
        })
    }

    fn metadata() -> Vec<(String, String)> {
        vec![
            ("Software".into(), "illume-rs test".into()),
            (
                "illume.prompt".into(),
                "a \"red\" <fox> & 一只猫\nline two".into(),
            ),
            ("illume.cfg".into(), "2".into()),
        ]
    }

    /// The packet as a reader sees it: the attributes, unescaped.
    fn assert_parameters(xmp: &str) {
        assert!(xmp.contains("xmp:CreatorTool=\"illume-rs test\""), "{xmp}");
        assert!(
            xmp.contains(
                "illume:prompt=\"a &quot;red&quot; &lt;fox&gt; &amp; 一只猫&#10;line two\""
            ),
            "{xmp}"
        );
        assert!(xmp.contains("illume:cfg=\"2\""), "{xmp}");
    }

    #[test]
    fn the_extension_picks_the_format_and_unknown_ones_are_refused() {
        for (name, format) in [
            ("a.PNG", ImageFormat::Png),
            ("a.jpeg", ImageFormat::Jpeg),
            ("a.jpg", ImageFormat::Jpeg),
            ("a.webp", ImageFormat::WebP),
        ] {
            assert_eq!(
                ImageFormat::from_path(Path::new(name)).unwrap(),
                format,
                "{name}"
            );
        }
        for bad in ["a.gif", "a", "a.png.tmp"] {
            let err = ImageFormat::from_path(Path::new(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains(bad) && err.contains(".webp"), "{err}");
        }
        let err = check_output(&scratch("no-such-dir").join("x.webp"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-dir"), "{err}");
    }

    #[test]
    fn webp_is_lossless_and_carries_the_parameters() {
        let path = scratch("out.webp");
        write_image(&path, &picture(), &metadata()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
        let xmp = String::from_utf8(decoder.xmp_metadata().unwrap().unwrap()).unwrap();
        assert_parameters(&xmp);
        let read = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(read, picture(), "lossless WebP must give back every pixel");
    }

    #[test]
    fn jpeg_decodes_and_carries_the_parameters_in_app1() {
        let path = scratch("out.jpg");
        write_image(&path, &picture(), &metadata()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let read = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(read.dimensions(), (48, 32));
        // Lossy, but close: quality 95 on a smooth gradient.
        let worst = read
            .as_raw()
            .iter()
            .zip(picture().as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 24, "JPEG off by {worst}");
        // SOI, JFIF APP0, then our APP1 with the XMP identifier.
        assert_eq!(&bytes[..4], &[0xFF, 0xD8, 0xFF, 0xE0]);
        let app0 = u16::from_be_bytes([bytes[4], bytes[5]]) as usize;
        let app1 = &bytes[4 + app0..];
        assert_eq!(&app1[..2], &[0xFF, 0xE1]);
        let length = u16::from_be_bytes([app1[2], app1[3]]) as usize;
        let body = &app1[4..2 + length];
        assert!(body.starts_with(JPEG_XMP_ID));
        assert_parameters(std::str::from_utf8(&body[JPEG_XMP_ID.len()..]).unwrap());
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file() {
        let path = scratch("keep.jpg");
        std::fs::write(&path, b"previous").unwrap();
        let huge = vec![("illume.prompt".to_string(), "x".repeat(70_000))];
        let err = write_image(&path, &picture(), &huge)
            .unwrap_err()
            .to_string();
        assert!(err.contains("keep.jpg") && err.contains(".png"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    }
}
