//! SVG → PDF (svg2pdf, vector, text kept as text with the bundled font embedded) and SVG → PNG (resvg).
//!
//! Both parse the SVG with usvg against a font database holding only the bundled font, so the output
//! never depends on the fonts a machine happens to have. Nothing here writes dates or random ids: the
//! same SVG gives the same bytes.

use std::sync::{Arc, OnceLock};

use resvg::tiny_skia;
use resvg::usvg;

use super::{FONT_BYTES, FONT_FAMILY};
use crate::error::{Error, Result};

fn fail(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Figure {
        reason: format!("{what}: {e}"),
        fix: "report this with the spec and data files".into(),
    }
}

/// The bundled font alone, also as every generic family.
fn fontdb() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_font_data(FONT_BYTES.to_vec());
        db.set_sans_serif_family(FONT_FAMILY);
        db.set_serif_family(FONT_FAMILY);
        db.set_monospace_family(FONT_FAMILY);
        Arc::new(db)
    })
    .clone()
}

/// Parses an SVG the way the PDF and PNG see it.
pub fn tree(svg: &str) -> Result<usvg::Tree> {
    let opt = usvg::Options {
        font_family: FONT_FAMILY.into(),
        fontdb: fontdb(),
        ..usvg::Options::default()
    };
    usvg::Tree::from_str(svg, &opt).map_err(|e| fail("the figure's SVG does not parse", e))
}

/// Document information of the PDF.
pub struct PdfInfo<'a> {
    pub title: &'a str,
    /// The figure spec (JSON): provenance travels with the file.
    pub subject: &'a str,
    pub keywords: &'a str,
    pub creator: &'a str,
}

/// One page the size of the SVG (CSS inches: 96 px = 72 pt) holding the SVG as a form XObject, plus
/// document info. `to_chunk` rather than `to_pdf`: only this way can the info dictionary carry the spec.
pub fn pdf(tree: &usvg::Tree, info: &PdfInfo) -> Result<Vec<u8>> {
    use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, TextStr};
    let opts = svg2pdf::ConversionOptions {
        embed_text: true,
        compress: true,
        ..svg2pdf::ConversionOptions::default()
    };
    let (chunk, svg_id) =
        svg2pdf::to_chunk(tree, opts).map_err(|e| fail("converting the SVG to PDF", e))?;
    let mut alloc = Ref::new(1);
    let catalog = alloc.bump();
    let pages = alloc.bump();
    let page = alloc.bump();
    let content_id = alloc.bump();
    let info_id = alloc.bump();
    let mut map = std::collections::HashMap::new();
    let chunk = chunk.renumber(|old| *map.entry(old).or_insert_with(|| alloc.bump()));
    let svg_id = *map.get(&svg_id).ok_or_else(|| {
        fail(
            "converting the SVG to PDF",
            "the figure object went missing",
        )
    })?;
    let (w, h) = (
        tree.size().width() * 72.0 / 96.0,
        tree.size().height() * 72.0 / 96.0,
    );
    let name = Name(b"F0");
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(pages);
    pdf.pages(pages).kids([page]).count(1);
    let mut p = pdf.page(page);
    p.media_box(Rect::new(0.0, 0.0, w, h));
    p.parent(pages);
    p.contents(content_id);
    p.resources().x_objects().pair(name, svg_id);
    p.finish();
    let mut content = Content::new();
    content.transform([w, 0.0, 0.0, h, 0.0, 0.0]).x_object(name);
    pdf.stream(content_id, &content.finish());
    pdf.extend(&chunk);
    pdf.document_info(info_id)
        .title(TextStr(info.title))
        .subject(TextStr(info.subject))
        .keywords(TextStr(info.keywords))
        .creator(TextStr(info.creator))
        .producer(TextStr("svg2pdf 0.13 + pdf-writer 0.12"));
    let mut bytes = pdf.finish();
    sort_resource_entries(&mut bytes);
    Ok(bytes)
}

/// svg2pdf 0.13 lists a resource dictionary's entries (`/xo0 7 0 R`, `/gs1 9 0 R`, …) in `HashMap` order,
/// which changes from run to run. Sorting the entry lines of each such dictionary makes the file
/// reproducible without changing its meaning, and since it only permutes whole lines, every byte offset
/// (and so the cross-reference table) stays valid. Stream data is skipped; only one-line entries of the
/// six resource kinds are touched.
pub fn sort_resource_entries(pdf: &mut [u8]) {
    const KINDS: [&[u8]; 6] = [
        b"/XObject <<",
        b"/ExtGState <<",
        b"/Font <<",
        b"/Pattern <<",
        b"/Shading <<",
        b"/ColorSpace <<",
    ];
    // Line spans: (start, end before the newline).
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in pdf.iter().enumerate() {
        if b == b'\n' {
            lines.push((start, i));
            start = i + 1;
        }
    }
    let text = |pdf: &[u8], k: usize| -> Vec<u8> { pdf[lines[k].0..lines[k].1].to_vec() };
    let mut i = 0;
    let mut in_stream = false;
    while i < lines.len() {
        let line = text(pdf, i);
        let t = line.trim_ascii();
        if in_stream || t == b"stream" {
            in_stream = if in_stream { t != b"endstream" } else { true };
            i += 1;
            continue;
        }
        if !KINDS.contains(&t) {
            i += 1;
            continue;
        }
        let first = i + 1;
        let mut last = first;
        while last < lines.len() && text(pdf, last).trim_ascii() != b">>" {
            last += 1;
        }
        let entries: Vec<Vec<u8>> = (first..last).map(|k| text(pdf, k)).collect();
        let simple = entries.iter().all(|e| {
            let t = e.trim_ascii();
            t.first() == Some(&b'/') && !t.windows(2).any(|w| w == b"<<")
        });
        if last < lines.len() && entries.len() > 1 && simple {
            let mut sorted = entries;
            sorted.sort_by(|a, b| a.trim_ascii().cmp(b.trim_ascii()));
            let mut pos = lines[first].0;
            for e in &sorted {
                pdf[pos..pos + e.len()].copy_from_slice(e);
                pdf[pos + e.len()] = b'\n';
                pos += e.len() + 1;
            }
        }
        i = last + 1;
    }
}

/// The figure rasterised at `dpi` on white, as an RGB PNG that records its resolution (pHYs), so a word
/// processor places it at the paper size.
pub fn png(tree: &usvg::Tree, dpi: u32) -> Result<Vec<u8>> {
    let scale = dpi as f32 / 96.0;
    let size = tree.size();
    let (w, h) = (
        (size.width() * scale).round().max(1.0) as u32,
        (size.height() * scale).round().max(1.0) as u32,
    );
    let mut pixmap = tiny_skia::Pixmap::new(w, h)
        .ok_or_else(|| fail("rasterising the figure", format!("{w}×{h} px is too large")))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    // Opaque background: premultiplied equals straight colour, so alpha can go.
    let rgb: Vec<u8> = pixmap
        .pixels()
        .iter()
        .flat_map(|p| {
            let c = p.demultiply();
            [c.red(), c.green(), c.blue()]
        })
        .collect();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let ppm = (dpi as f64 / 0.0254).round() as u32;
        enc.set_pixel_dims(Some(png::PixelDimensions {
            xppu: ppm,
            yppu: ppm,
            unit: png::Unit::Meter,
        }));
        let mut wr = enc
            .write_header()
            .map_err(|e| fail("encoding the PNG", e))?;
        wr.write_image_data(&rgb)
            .map_err(|e| fail("encoding the PNG", e))?;
        wr.finish().map_err(|e| fail("encoding the PNG", e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resource_entries_are_sorted_in_place() {
        let mut pdf = b"1 0 obj\n<<\n  /XObject <<\n    /xo1 10 0 R\n    /xo0 7 0 R\n  >>\n>>\nstream\n/Font <<\n/b\n/a\n>>\nendstream\n".to_vec();
        let n = pdf.len();
        super::sort_resource_entries(&mut pdf);
        assert_eq!(pdf.len(), n);
        assert_eq!(
            String::from_utf8(pdf).unwrap(),
            "1 0 obj\n<<\n  /XObject <<\n    /xo0 7 0 R\n    /xo1 10 0 R\n  >>\n>>\nstream\n/Font <<\n/b\n/a\n>>\nendstream\n"
        );
    }
}
