//! A small document model for reports, rendered to GitHub Markdown and to a
//! self-contained HTML page.
//!
//! A [`Document`] is a title and a sequence of blocks: section headings, paragraphs of
//! styled text, bullet lists, tables, figure references and preformatted text. The model
//! carries *content*, not markup: every string is escaped for the target format when it
//! is rendered, so a metric named `p99_ttft` or a config value containing `<|im_end|>`
//! appears literally in both outputs.
//!
//! * Markdown ([`Document::to_markdown`]) links figures as relative paths, so `report.md`
//!   renders on GitHub next to its `figures/` directory.
//! * HTML ([`Document::to_html`]) embeds each figure's PNG as a base64 `data:` URI and
//!   carries its own minimal CSS: one file, no external references, viewable offline.
//!
//! Tables right-align columns whose cells are all numbers, in both formats. Tables and
//! figures are numbered in order of appearance.

use std::fmt::Write as _;
use std::fs;
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;

use crate::analysis::plots::FigureFiles;
use crate::io::write_atomic;
use crate::{ensure, Error, Result};

/// A run of text with one style.
#[derive(Debug, Clone, PartialEq)]
pub enum Inline {
    /// Plain text.
    Text(String),
    /// Monospace text (identifiers, paths, commands).
    Code(String),
    /// Bold text.
    Strong(String),
    /// Italic text.
    Emph(String),
}

impl Inline {
    /// Plain text.
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }

    /// Monospace text.
    pub fn code(s: impl Into<String>) -> Self {
        Self::Code(s.into())
    }

    /// Bold text.
    pub fn strong(s: impl Into<String>) -> Self {
        Self::Strong(s.into())
    }

    /// Italic text.
    pub fn emph(s: impl Into<String>) -> Self {
        Self::Emph(s.into())
    }
}

impl From<&str> for Inline {
    fn from(s: &str) -> Self {
        Self::Text(s.to_string())
    }
}

impl From<String> for Inline {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text, left-aligned.
    Text(String),
    /// A number printed with a fixed number of decimals; non-finite values print as
    /// "n/a".
    Number {
        /// The value.
        value: f64,
        /// Digits after the decimal point.
        decimals: usize,
    },
    /// An integer.
    Int(i64),
    /// Nothing (does not make a numeric column textual).
    Empty,
}

impl Cell {
    /// A text cell.
    pub fn text(s: impl Into<String>) -> Self {
        Self::Text(s.into())
    }

    /// A number with `decimals` digits after the point.
    pub fn num(value: f64, decimals: usize) -> Self {
        Self::Number { value, decimals }
    }

    /// An integer cell.
    pub fn int(value: i64) -> Self {
        Self::Int(value)
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Self::Number { .. } | Self::Int(_))
    }

    fn display(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number { value, decimals } if value.is_finite() => {
                let s = format!("{value:.decimals$}");
                // "-0.00" reads as a sign that is not there.
                if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
                    s[1..].to_string()
                } else {
                    s
                }
            }
            Self::Number { .. } => "n/a".to_string(),
            Self::Int(v) => v.to_string(),
            Self::Empty => String::new(),
        }
    }
}

/// A table with a header row; every row has one cell per column.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    caption: Option<String>,
    headers: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these column headers (put units in them, e.g. `"p99 (ms)"`). Errors
    /// if there are no columns.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Result<Self> {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        ensure!(!headers.is_empty(), InvalidInput: "a table needs at least one column");
        Ok(Self {
            caption: None,
            headers,
            rows: Vec::new(),
        })
    }

    /// Sets the caption shown above the table.
    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// Appends a row. Errors if it does not have one cell per column.
    pub fn push_row(&mut self, cells: impl IntoIterator<Item = Cell>) -> Result<()> {
        let cells: Vec<Cell> = cells.into_iter().collect();
        ensure!(
            cells.len() == self.headers.len(),
            InvalidInput: "table row has {} cells for {} columns ({})",
            cells.len(),
            self.headers.len(),
            self.headers.join(", ")
        );
        self.rows.push(cells);
        Ok(())
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the table has no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// A column is right-aligned when it has at least one number and nothing but numbers
    /// and empty cells.
    fn right_aligned(&self) -> Vec<bool> {
        (0..self.headers.len())
            .map(|c| {
                let mut cells = self.rows.iter().map(|r| &r[c]);
                cells.clone().any(Cell::is_numeric)
                    && cells.all(|cell| cell.is_numeric() || *cell == Cell::Empty)
            })
            .collect()
    }
}

/// A figure placed in the document: its PNG (path relative to the document's directory),
/// optionally the SVG version, a caption and notes to print under it.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureRef {
    png: PathBuf,
    svg: Option<PathBuf>,
    caption: String,
    notes: Vec<String>,
}

impl FigureRef {
    /// A figure whose PNG is at `png`, relative to the directory the document is written
    /// to. Errors on an absolute path (the report could not be moved) or an empty caption.
    pub fn new(png: impl Into<PathBuf>, caption: impl Into<String>) -> Result<Self> {
        let png = png.into();
        let caption = caption.into();
        ensure!(
            png.is_relative(),
            InvalidInput: "figure path {} must be relative to the report's directory",
            png.display()
        );
        ensure!(
            !caption.trim().is_empty(),
            InvalidInput: "figure {} needs a caption",
            png.display()
        );
        Ok(Self {
            png,
            svg: None,
            caption,
            notes: Vec::new(),
        })
    }

    /// A figure from the files a `plots` function wrote, with paths made relative to
    /// `doc_dir` (the directory the document will be written to); the figure's notes
    /// are carried over.
    pub fn from_files(
        doc_dir: &Path,
        files: &FigureFiles,
        caption: impl Into<String>,
    ) -> Result<Self> {
        let relative = |p: &Path| -> Result<PathBuf> {
            p.strip_prefix(doc_dir).map(Path::to_path_buf).map_err(|_| {
                Error::InvalidInput(format!(
                    "figure {} is not inside the report directory {}",
                    p.display(),
                    doc_dir.display()
                ))
            })
        };
        let mut figure = Self::new(relative(&files.png)?, caption)?;
        figure.svg = Some(relative(&files.svg)?);
        figure.notes = files.notes.clone();
        Ok(figure)
    }

    /// Links the SVG version (Markdown only; the HTML page embeds the PNG).
    pub fn with_svg(mut self, svg: impl Into<PathBuf>) -> Self {
        self.svg = Some(svg.into());
        self
    }

    /// Adds notes printed under the caption (e.g. `FigureFiles::notes`).
    pub fn with_notes(mut self, notes: impl IntoIterator<Item = String>) -> Self {
        self.notes.extend(notes);
        self
    }
}

/// One block of a document.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A section heading (`##`, `<h2>`).
    Section(String),
    /// A subsection heading (`###`, `<h3>`).
    Subsection(String),
    /// A paragraph.
    Paragraph(Vec<Inline>),
    /// A bullet list, one paragraph per item.
    Bullets(Vec<Vec<Inline>>),
    /// A table.
    Table(Table),
    /// A figure.
    Figure(FigureRef),
    /// Preformatted text (configs, commands), shown verbatim in monospace.
    Preformatted(String),
}

/// A report: a title and blocks, rendered to Markdown or HTML.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    title: String,
    blocks: Vec<Block>,
}

impl Document {
    /// An empty document with a title (the only level-1 heading).
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    /// The blocks so far.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Appends any block.
    pub fn push(&mut self, block: Block) -> &mut Self {
        self.blocks.push(block);
        self
    }

    /// Appends a section heading.
    pub fn section(&mut self, title: impl Into<String>) -> &mut Self {
        self.push(Block::Section(title.into()))
    }

    /// Appends a subsection heading.
    pub fn subsection(&mut self, title: impl Into<String>) -> &mut Self {
        self.push(Block::Subsection(title.into()))
    }

    /// Appends a paragraph of plain text.
    pub fn text(&mut self, text: impl Into<String>) -> &mut Self {
        self.push(Block::Paragraph(vec![Inline::Text(text.into())]))
    }

    /// Appends a paragraph of styled runs.
    pub fn paragraph(&mut self, runs: impl IntoIterator<Item = Inline>) -> &mut Self {
        self.push(Block::Paragraph(runs.into_iter().collect()))
    }

    /// Appends a bullet list.
    pub fn bullets(&mut self, items: impl IntoIterator<Item = Vec<Inline>>) -> &mut Self {
        self.push(Block::Bullets(items.into_iter().collect()))
    }

    /// Appends a table.
    pub fn table(&mut self, table: Table) -> &mut Self {
        self.push(Block::Table(table))
    }

    /// Appends a figure.
    pub fn figure(&mut self, figure: FigureRef) -> &mut Self {
        self.push(Block::Figure(figure))
    }

    /// Appends preformatted text.
    pub fn preformatted(&mut self, text: impl Into<String>) -> &mut Self {
        self.push(Block::Preformatted(text.into()))
    }

    /// Renders GitHub-flavoured Markdown; figures are linked by their relative paths.
    pub fn to_markdown(&self) -> String {
        let mut out = format!("# {}\n", md_escape(&self.title, true));
        let (mut tables, mut figures) = (0, 0);
        for block in &self.blocks {
            out.push('\n');
            match block {
                Block::Section(t) => {
                    let _ = writeln!(out, "## {}", md_escape(t, false));
                }
                Block::Subsection(t) => {
                    let _ = writeln!(out, "### {}", md_escape(t, false));
                }
                Block::Paragraph(runs) => {
                    let _ = writeln!(out, "{}", md_inlines(runs, false));
                }
                Block::Bullets(items) => {
                    for item in items {
                        let _ = writeln!(out, "- {}", md_inlines(item, false));
                    }
                }
                Block::Table(table) => {
                    tables += 1;
                    md_table(&mut out, table, tables);
                }
                Block::Figure(figure) => {
                    figures += 1;
                    let caption = md_escape(&figure.caption, false);
                    let _ = writeln!(
                        out,
                        "![Figure {figures}: {caption}]({})",
                        md_url(&figure.png)
                    );
                    out.push('\n');
                    let _ = write!(out, "*Figure {figures}.* {caption}");
                    if let Some(svg) = &figure.svg {
                        let _ = write!(out, " ([SVG]({}))", md_url(svg));
                    }
                    out.push('\n');
                    for note in &figure.notes {
                        let _ = writeln!(out, "\n> Note: {}", md_escape(note, false));
                    }
                }
                Block::Preformatted(text) => {
                    let fence = "`".repeat(longest_run(text, '`').max(2) + 1);
                    let _ = writeln!(out, "{fence}text\n{}\n{fence}", text.trim_end_matches('\n'));
                }
            }
        }
        out
    }

    /// Renders a self-contained HTML page. Figures are read from `base_dir` (the
    /// directory their relative paths start from) and embedded as base64 PNGs; errors if
    /// a figure is missing or is not a PNG.
    pub fn to_html(&self, base_dir: &Path) -> Result<String> {
        let mut body = String::new();
        let (mut tables, mut figures) = (0, 0);
        for block in &self.blocks {
            match block {
                Block::Section(t) => {
                    let _ = writeln!(body, "<h2>{}</h2>", html_escape(t));
                }
                Block::Subsection(t) => {
                    let _ = writeln!(body, "<h3>{}</h3>", html_escape(t));
                }
                Block::Paragraph(runs) => {
                    let _ = writeln!(body, "<p>{}</p>", html_inlines(runs));
                }
                Block::Bullets(items) => {
                    body.push_str("<ul>\n");
                    for item in items {
                        let _ = writeln!(body, "<li>{}</li>", html_inlines(item));
                    }
                    body.push_str("</ul>\n");
                }
                Block::Table(table) => {
                    tables += 1;
                    html_table(&mut body, table, tables);
                }
                Block::Figure(figure) => {
                    figures += 1;
                    let png = read_png(&base_dir.join(&figure.png))?;
                    let caption = html_escape(&figure.caption);
                    let _ = writeln!(
                        body,
                        "<figure>\n<img src=\"data:image/png;base64,{}\" alt=\"Figure {figures}: {caption}\">\n\
                         <figcaption><strong>Figure {figures}.</strong> {caption}</figcaption>",
                        base64::engine::general_purpose::STANDARD.encode(&png)
                    );
                    for note in &figure.notes {
                        let _ = writeln!(body, "<p class=\"note\">Note: {}</p>", html_escape(note));
                    }
                    body.push_str("</figure>\n");
                }
                Block::Preformatted(text) => {
                    let _ = writeln!(body, "<pre><code>{}</code></pre>", html_escape(text));
                }
            }
        }
        let title = html_escape(&self.title);
        Ok(format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n"
        ))
    }

    /// Writes the Markdown rendering to `path` atomically.
    pub fn write_markdown(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_markdown().as_bytes())
    }

    /// Writes the HTML rendering to `path` atomically; figure paths are resolved against
    /// `path`'s directory.
    pub fn write_html(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new(""));
        write_atomic(path, self.to_html(dir)?.as_bytes())
    }
}

/// Minimal inline CSS: readable width, GitHub-like tables, numeric columns right-aligned
/// with tabular figures. Font families are names only; nothing is fetched.
const STYLE: &str = "\
body { font-family: system-ui, -apple-system, \"Segoe UI\", Roboto, \"DejaVu Sans\", sans-serif; \
max-width: 75rem; margin: 2rem auto; padding: 0 1rem; color: #1f2328; line-height: 1.5; }
h1, h2, h3 { line-height: 1.25; }
h2 { border-bottom: 1px solid #d8dee4; padding-bottom: .3rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 1rem 0; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; padding-bottom: .4rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .7rem; }
th { background: #f6f8fa; }
.num { text-align: right; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; margin-top: .4rem; }
.note { color: #57606a; font-size: .9rem; margin: .3rem 0 0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, \"DejaVu Sans Mono\", monospace; \
font-size: .9em; background: #f6f8fa; }
code { padding: .1em .3em; border-radius: 4px; }
pre { padding: .8rem 1rem; overflow-x: auto; border-radius: 6px; }
pre code { padding: 0; }
";

// ---------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------

/// Escapes text so that GitHub Markdown shows it literally. Inline syntax characters are
/// backslash-escaped (underscores only at word boundaries, where they could start
/// emphasis; `&` only where it could start an entity; `<` always, so no tag or autolink
/// can form); with `block_start`, a leading character that would start a heading, list,
/// quote or rule is escaped too. Newlines become spaces: a run never spans blocks.
fn md_escape(text: &str, block_start: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
        let next = chars.get(i + 1).copied();
        let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '_' if !(word(prev) && word(next)) => out.push_str("\\_"),
            '&' if starts_entity(&chars[i + 1..]) => out.push_str("\\&"),
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    if block_start {
        escape_block_start(&mut out);
    }
    out
}

/// Whether the text after a `&` would make it an entity or character reference
/// (`amp;`, `#39;`, `#x27;`).
fn starts_entity(after: &[char]) -> bool {
    let name = after
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == '#')
        .count();
    name > 0 && after.get(name) == Some(&';')
}

/// Escapes a leading `#`, `-`, `+`, `=`, `>` or an ordered-list marker (`12.`, `3)`).
fn escape_block_start(s: &mut String) {
    let indent = s.len() - s.trim_start().len();
    let rest = &s[indent..];
    if rest.starts_with(['#', '-', '+', '=', '>']) {
        s.insert(indent, '\\');
        return;
    }
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    // A list marker is 1–9 digits, `.` or `)`, then a space or the end of the line.
    let after = &rest[digits..];
    let marker =
        after.starts_with(['.', ')']) && after[1..].chars().next().is_none_or(char::is_whitespace);
    if (1..=9).contains(&digits) && marker {
        s.insert(indent + digits, '\\');
    }
}

fn longest_run(text: &str, c: char) -> usize {
    text.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// A code span whose fence is longer than any backtick run inside it.
fn md_code(code: &str, in_table: bool) -> String {
    let code = code.replace(['\n', '\r'], " ");
    let code = if in_table {
        code.replace('|', "\\|")
    } else {
        code
    };
    let fence = "`".repeat(longest_run(&code, '`') + 1);
    let pad = if code.starts_with('`') || code.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{code}{pad}{fence}")
}

fn md_inlines(runs: &[Inline], in_table: bool) -> String {
    let mut out = String::new();
    for (i, run) in runs.iter().enumerate() {
        let first = i == 0 && !in_table;
        match run {
            Inline::Text(t) => out.push_str(&md_escape(t, first)),
            Inline::Code(c) => out.push_str(&md_code(c, in_table)),
            Inline::Strong(t) if !t.is_empty() => {
                let _ = write!(out, "**{}**", md_escape(t, false));
            }
            Inline::Emph(t) if !t.is_empty() => {
                let _ = write!(out, "*{}*", md_escape(t, false));
            }
            Inline::Strong(_) | Inline::Emph(_) => {}
        }
    }
    out
}

fn md_table(out: &mut String, table: &Table, number: usize) {
    if let Some(caption) = &table.caption {
        let _ = writeln!(out, "*Table {number}.* {}\n", md_escape(caption, false));
    }
    let right = table.right_aligned();
    let header: Vec<String> = table.headers.iter().map(|h| md_escape(h, false)).collect();
    let rows: Vec<Vec<String>> = table
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    Cell::Text(t) => md_escape(t, false),
                    other => other.display(),
                })
                .collect()
        })
        .collect();
    // Pad to column width so the raw Markdown reads as a table too.
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let line = |cells: &[String]| -> String {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(c, text)| {
                let fill = " ".repeat(widths[c] - text.chars().count());
                if right[c] {
                    format!("{fill}{text}")
                } else {
                    format!("{text}{fill}")
                }
            })
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    out.push_str(&line(&header));
    let rule: Vec<String> = widths
        .iter()
        .zip(&right)
        .map(|(&w, &r)| {
            if r {
                format!("{}:", "-".repeat(w - 1))
            } else {
                format!(":{}", "-".repeat(w - 1))
            }
        })
        .collect();
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for row in &rows {
        out.push_str(&line(row));
    }
}

/// A relative path as a Markdown link target: `/`-separated, percent-encoded outside
/// the unreserved characters.
fn md_url(path: &Path) -> String {
    let joined = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/");
    let mut out = String::with_capacity(joined.len());
    for b in joined.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------

/// Escapes text for HTML element content and double- or single-quoted attributes.
fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn html_inlines(runs: &[Inline]) -> String {
    runs.iter()
        .map(|run| match run {
            Inline::Text(t) => html_escape(t),
            Inline::Code(c) => format!("<code>{}</code>", html_escape(c)),
            Inline::Strong(t) => format!("<strong>{}</strong>", html_escape(t)),
            Inline::Emph(t) => format!("<em>{}</em>", html_escape(t)),
        })
        .collect()
}

fn html_table(out: &mut String, table: &Table, number: usize) {
    let right = table.right_aligned();
    let class = |c: usize| if right[c] { " class=\"num\"" } else { "" };
    out.push_str("<table>\n");
    if let Some(caption) = &table.caption {
        let _ = writeln!(
            out,
            "<caption><strong>Table {number}.</strong> {}</caption>",
            html_escape(caption)
        );
    }
    out.push_str("<thead><tr>");
    for (c, h) in table.headers.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", class(c), html_escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (c, cell) in row.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(c), html_escape(&cell.display()));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn read_png(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(|e| Error::MissingInput {
        path: path.to_path_buf(),
        msg: format!("figure referenced by the report cannot be read ({e})"),
        hint: Some("render the figures before the report".to_string()),
    })?;
    ensure!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        InvalidInput: "{} is not a PNG file", path.display()
    );
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escaping() {
        assert_eq!(md_escape("a*b*", false), "a\\*b\\*");
        assert_eq!(md_escape("p99_ttft", false), "p99_ttft");
        assert_eq!(md_escape("_x_", false), "\\_x\\_");
        assert_eq!(md_escape("<|im_end|>", false), "\\<\\|im_end\\|>");
        assert_eq!(md_escape("> quote", true), "\\> quote");
        assert_eq!(md_escape("p > 0.05!", false), "p > 0.05!");
        assert_eq!(md_escape("[link](x)", false), "\\[link\\](x)");
        assert_eq!(md_escape("AT&T &amp;", false), "AT&T \\&amp;");
        assert_eq!(md_escape("two\nlines", false), "two lines");
        assert_eq!(md_escape("# not a heading", true), "\\# not a heading");
        assert_eq!(md_escape("-5 % error", true), "\\-5 % error");
        assert_eq!(md_escape("1. not a list", true), "1\\. not a list");
        assert_eq!(md_escape("1.5 ms", true), "1.5 ms");
        assert_eq!(md_escape("3) third", true), "3\\) third");
        assert_eq!(md_code("a`b", false), "``a`b``");
        assert_eq!(md_code("`x", false), "`` `x ``");
        assert_eq!(md_code("a|b", true), "`a\\|b`");
    }

    #[test]
    fn html_escaping() {
        assert_eq!(
            html_escape(r#"<a href="x">Tom & Jerry's</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
    }

    #[test]
    fn urls_are_relative_and_encoded() {
        assert_eq!(
            md_url(Path::new("figures/cdf ttft (ms).png")),
            "figures/cdf%20ttft%20%28ms%29.png"
        );
        assert_eq!(md_url(Path::new("../x.png")), "../x.png");
    }

    #[test]
    fn numeric_columns_are_detected() {
        let mut t = Table::new(["metric", "value", "mixed"]).unwrap();
        t.push_row([Cell::text("a"), Cell::num(1.0, 2), Cell::int(3)])
            .unwrap();
        t.push_row([Cell::text("b"), Cell::Empty, Cell::text("x")])
            .unwrap();
        assert_eq!(t.right_aligned(), vec![false, true, false]);
        assert!(t.push_row([Cell::Empty]).is_err());
        assert!(Table::new(Vec::<String>::new()).is_err());
        assert_eq!(Cell::num(-0.0001, 2).display(), "0.00");
        assert_eq!(Cell::num(f64::NAN, 2).display(), "n/a");
        assert_eq!(Cell::num(-1.256, 2).display(), "-1.26");
    }
}
