//! Prompts of real English text whose tokenization is exactly the requested length.
//!
//! # Why not cut a long text at token `n`?
//!
//! Decoding the first `n` tokens of a text and re-encoding the result is off by a token or
//! two whenever the cut splits a word: the fragment merges differently. Trimming and
//! re-encoding until the count fits costs several full encodes per prompt.
//!
//! # The exact method
//!
//! Byte-level BPE tokenizers such as Qwen3's first split text into *pieces* with a regex
//! (a word with its leading space, a digit, a punctuation run, ...) and then merge bytes
//! only *within* a piece. So the token count of a text is the sum of its pieces' counts,
//! and a piece's count does not depend on its neighbours. The regex looks only forward, so
//! text starting at a piece boundary splits into the same pieces, and cutting after a
//! non-whitespace piece does not change the pieces before the cut.
//!
//! At start-up the corpus (original prose, `corpus.txt`) is cut into sentences, each kept
//! in a canonical form (`" The ... end."`) and split into pieces with the tokenizer's own
//! pre-tokenizer; every distinct piece is encoded once. A prompt is then assembled piece by
//! piece, adding up counts, from a seeded random word in the corpus through a seeded
//! sequence of whole sentences, grouped into paragraphs. Only three joins occur — a piece
//! after a piece of the same sentence, a sentence after `"."` (its leading space keeps the
//! pieces apart), and a paragraph start after `".\n\n"` (the first piece then loses its
//! leading space) — and their counts are precomputed. If the running count would step over
//! `n` inside a multi-token piece, that attempt is dropped and another start is drawn
//! (about one attempt in twenty with Qwen3 and this corpus).
//!
//! The finished text is checked before it is returned: it is re-split in full with the
//! tokenizer's own compiled pre-tokenizer regex, and every piece must end exactly where the
//! plan put it; each planned piece's count was computed by the full tokenizer pipeline
//! when the corpus was loaded, so the text then has exactly `n` tokens. (A text that
//! splits differently is counted outright and used only if it still has `n` tokens.) This
//! costs one regex pass instead of a full encode, whose per-byte alignment bookkeeping in
//! the `tokenizers` crate is ~15× slower. Where the shortcut does not apply (other
//! tokenizer layouts, special-token strings) the check is a full encode. Cost: linear
//! in `n`.
//!
//! Long prompts cycle through the sentences in a fresh random order on each pass, so text
//! far longer than the corpus still varies; prompts with different ids start at different
//! words and continue differently.

use std::collections::HashMap;
use std::ops::Range;

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::utils::SysRegex;
use tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    SplitDelimiterBehavior,
};

use super::rng::{derive_rng, PROMPT_STREAM};
use super::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The bundled corpus: original English prose written for this project.
pub const BUNDLED_CORPUS: &str = include_str!("corpus.txt");

/// Attempts (random starts) per prompt before giving up.
const MAX_ATTEMPTS: usize = 64;
/// Paragraph lengths of synthesized prompts, in sentences.
const SENTENCES_PER_PARAGRAPH: Range<usize> = 3..7;
const PARAGRAPH_BREAK: &str = "\n\n";

/// What to synthesize: one prompt of `num_tokens` tokens, identified by `prompt_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptSpec {
    /// Identifies the prompt; with the seed, it determines the text.
    pub prompt_id: u64,
    /// Exact token count wanted, >= 1.
    pub num_tokens: u32,
}

/// A synthesized prompt: `text` encodes to exactly `num_tokens` tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// The spec's id.
    pub prompt_id: u64,
    /// Token count of `text` (without special tokens).
    pub num_tokens: u32,
    /// The prompt.
    pub text: String,
}

/// One pre-tokenizer piece of a canonical sentence.
#[derive(Debug, Clone)]
struct Piece {
    /// Byte range in the sentence's text.
    bytes: Range<usize>,
    tokens: u32,
    /// Tokens of the piece without its leading whitespace, as it appears at the start of a
    /// prompt or of a paragraph.
    leading_tokens: u32,
    /// A prompt may start here: the piece is a word.
    can_start: bool,
    /// A prompt may end here: the piece is not whitespace (whose split depends on what
    /// follows).
    can_end: bool,
}

/// A corpus sentence in canonical form: one leading space, no trailing whitespace.
#[derive(Debug, Clone)]
struct Sentence {
    text: String,
    pieces: Vec<Piece>,
    /// Tokens of the last piece followed by a paragraph break.
    last_piece_break_tokens: u32,
}

/// A run of pieces of one sentence inside a prompt under construction.
#[derive(Debug, Clone, Copy)]
struct Span {
    sentence: usize,
    first_piece: usize,
    end_piece: usize,
    /// Drop leading whitespace: the span starts the prompt or a paragraph.
    trim_start: bool,
    /// Follow the span with a paragraph break.
    paragraph_break: bool,
}

/// Builds exact-length prompts with one tokenizer from one corpus.
pub struct PromptSynthesizer<'t> {
    tokenizer: &'t Tokenizer,
    sentences: Vec<Sentence>,
    /// Every (sentence, piece) where a prompt may start.
    starts: Vec<(usize, usize)>,
    /// Token counts of every corpus piece (and its trimmed and paragraph-end variants).
    piece_tokens: HashMap<String, u32>,
    /// The tokenizer's own pre-tokenizer regex, if its pipeline allows [`Self::count_tokens`]
    /// to count piece by piece.
    split_regex: Option<&'t SysRegex>,
    /// Whether the normalizer leaves ASCII text unchanged (none, or a Unicode normal form
    /// that is the identity on ASCII).
    normalizer_keeps_ascii: bool,
    /// Whether there is no normalizer at all, so that any text is left unchanged.
    normalizer_keeps_everything: bool,
    /// Special-token strings; text containing one is counted by the full pipeline.
    added_tokens: Vec<String>,
    /// First bytes of the special tokens: text without any of them (a memchr each) holds
    /// no special token, which spares the substring searches on nearly every prompt.
    added_token_first_bytes: Vec<u8>,
}

impl std::fmt::Debug for PromptSynthesizer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptSynthesizer")
            .field("tokenizer", &self.tokenizer.reference())
            .field("sentences", &self.sentences.len())
            .field("starts", &self.starts.len())
            .field("piecewise_count", &self.split_regex.is_some())
            .finish()
    }
}

impl<'t> PromptSynthesizer<'t> {
    /// A synthesizer over the bundled corpus.
    pub fn new(tokenizer: &'t Tokenizer) -> Result<Self> {
        Self::with_corpus(tokenizer, BUNDLED_CORPUS)
    }

    /// A synthesizer over `corpus`: plain prose, paragraphs separated by blank lines.
    ///
    /// Fails with [`Error::Tokenizer`] if the tokenizer does not count additively over its
    /// pre-tokenizer pieces (then no exact construction is possible), and with
    /// [`Error::InvalidInput`] if the corpus has no words.
    pub fn with_corpus(tokenizer: &'t Tokenizer, corpus: &str) -> Result<Self> {
        let mut counter = PieceCounter {
            tokenizer,
            cache: HashMap::new(),
        };
        let mut sentences = Vec::new();
        for paragraph in paragraphs(corpus) {
            let pieces = pre_tokenize(tokenizer, &paragraph)?;
            for range in sentence_ranges(&paragraph, &pieces) {
                let canonical = format!(" {}", paragraph[range].trim());
                sentences.push(counter.sentence(canonical)?);
            }
        }
        let starts: Vec<(usize, usize)> = sentences
            .iter()
            .enumerate()
            .flat_map(|(s, sentence)| {
                sentence
                    .pieces
                    .iter()
                    .enumerate()
                    .filter(|(_, piece)| piece.can_start)
                    .map(move |(p, _)| (s, p))
            })
            .collect();
        if starts.is_empty() {
            return Err(Error::InvalidInput(
                "the prompt corpus contains no words".to_string(),
            ));
        }
        let hf = tokenizer.inner();
        let normalizer = hf.get_normalizer();
        let added_tokens: Vec<String> = hf
            .get_added_tokens_decoder()
            .into_values()
            .map(|token| token.content)
            .collect();
        let mut added_token_first_bytes: Vec<u8> = added_tokens
            .iter()
            .filter_map(|token| token.bytes().next())
            .collect();
        added_token_first_bytes.sort_unstable();
        added_token_first_bytes.dedup();
        Ok(Self {
            tokenizer,
            sentences,
            starts,
            piece_tokens: counter.cache,
            split_regex: byte_level_split_regex(hf),
            normalizer_keeps_everything: normalizer.is_none(),
            normalizer_keeps_ascii: matches!(
                normalizer,
                None | Some(NormalizerWrapper::NFC(_) | NormalizerWrapper::NFKC(_))
            ),
            added_tokens,
            added_token_first_bytes,
        })
    }

    /// Number of tokens of `text` with the synthesizer's tokenizer, without special tokens:
    /// always equal to [`Tokenizer::count_tokens`], and an order of magnitude faster on
    /// prose for tokenizers laid out as Qwen's.
    ///
    /// For those (normalizer: none or NFC/NFKC; pre-tokenizer: a regex split followed by a
    /// byte-level mapping that does not split again; BPE), a text's tokens are exactly the
    /// BPE tokens of each regex match, encoded separately. So the text is split with the
    /// tokenizer's own compiled regex and each piece's count is looked up (every corpus
    /// piece was encoded once with the full pipeline) or, if new, encoded. This skips the
    /// full pipeline's per-byte alignment bookkeeping, which dominates its cost. Text with
    /// non-ASCII characters (under a normalizer) or special-token strings, and other
    /// tokenizer layouts, are counted by the full pipeline.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let Some(regex) = self.split_regex.filter(|_| self.piecewise_applies(text)) else {
            return self.tokenizer.count_tokens(text);
        };
        // Isolated splitting: matches and the gaps between them are all pieces.
        let mut total = 0;
        let mut previous_end = 0;
        for (start, end) in regex.find_iter(text) {
            if start > previous_end {
                total += self.piece_count(&text[previous_end..start])?;
            }
            total += self.piece_count(&text[start..end])?;
            previous_end = end;
        }
        if previous_end < text.len() {
            total += self.piece_count(&text[previous_end..])?;
        }
        Ok(total)
    }

    /// Whether the normalizer leaves `text` unchanged and it holds no special token.
    fn piecewise_applies(&self, text: &str) -> bool {
        (self.normalizer_keeps_everything || (self.normalizer_keeps_ascii && text.is_ascii()))
            && !self.may_contain_added_token(text)
    }

    fn may_contain_added_token(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        self.added_token_first_bytes
            .iter()
            .any(|first| bytes.contains(first))
            && self
                .added_tokens
                .iter()
                .any(|token| text.contains(token.as_str()))
    }

    fn piece_count(&self, piece: &str) -> Result<usize> {
        match self.piece_tokens.get(piece) {
            Some(&tokens) => Ok(tokens as usize),
            None => self.tokenizer.count_tokens(piece),
        }
    }

    /// The text of prompt `prompt_id` of the workload seeded with `seed`: exactly
    /// `num_tokens` tokens (checked by recounting the finished text). Deterministic in
    /// `(seed, prompt_id, num_tokens)`, the corpus and the tokenizer.
    pub fn synthesize(&self, num_tokens: u32, seed: u64, prompt_id: u64) -> Result<String> {
        if num_tokens == 0 {
            return Err(Error::InvalidInput(format!(
                "prompt {prompt_id}: a prompt needs at least one token"
            )));
        }
        let mut rng = derive_rng(seed, PROMPT_STREAM, prompt_id);
        let mut last_mismatch = None;
        for _ in 0..MAX_ATTEMPTS {
            let Some(spans) = self.plan(num_tokens, &mut rng) else {
                continue;
            };
            let (text, piece_ends) = self.render(&spans);
            if self.splits_as_planned(&text, &piece_ends) {
                return Ok(text);
            }
            // The text did not split where planned: count it outright; it may still fit.
            let actual = self.count_tokens(&text)?;
            if actual == num_tokens as usize {
                return Ok(text);
            }
            last_mismatch = Some(actual);
        }
        Err(Error::Tokenizer(match last_mismatch {
            Some(actual) => format!(
                "prompt {prompt_id}: no exact {num_tokens}-token prompt in {MAX_ATTEMPTS} \
                 attempts; the last candidate encoded to {actual} tokens, so tokenizer {} \
                 does not count additively over its pre-tokenizer pieces",
                self.tokenizer.reference()
            ),
            None => format!(
                "prompt {prompt_id}: no start in the corpus gives exactly {num_tokens} tokens \
                 in {MAX_ATTEMPTS} attempts"
            ),
        }))
    }

    /// One prompt per spec, in order, built in parallel.
    pub fn synthesize_all(&self, specs: &[PromptSpec], seed: u64) -> Result<Vec<Prompt>> {
        specs
            .par_iter()
            .map(|spec| {
                Ok(Prompt {
                    prompt_id: spec.prompt_id,
                    num_tokens: spec.num_tokens,
                    text: self.synthesize(spec.num_tokens, seed, spec.prompt_id)?,
                })
            })
            .collect()
    }

    /// Picks a random start and walks forward, adding piece counts, until exactly
    /// `num_tokens`; `None` if the count steps over the target inside a piece.
    fn plan(&self, num_tokens: u32, rng: &mut ChaCha8Rng) -> Option<Vec<Span>> {
        let (mut sentence, mut first_piece) = self.starts[rng.random_range(0..self.starts.len())];
        let mut order = SentenceOrder::new(self.sentences.len());
        let mut left_in_paragraph = rng.random_range(SENTENCES_PER_PARAGRAPH);
        let mut spans = Vec::new();
        let mut total: u32 = 0;
        let mut at_paragraph_start = true;
        loop {
            let pieces = &self.sentences[sentence].pieces;
            let mut span = Span {
                sentence,
                first_piece,
                end_piece: pieces.len(),
                trim_start: at_paragraph_start,
                paragraph_break: false,
            };
            // Whether the sentence's last piece was counted without its leading space.
            let mut last_piece_trimmed = false;
            for (index, piece) in pieces.iter().enumerate().skip(first_piece) {
                let trimmed = index == first_piece && at_paragraph_start;
                last_piece_trimmed = trimmed;
                let tokens = if trimmed {
                    piece.leading_tokens
                } else {
                    piece.tokens
                };
                total = total.checked_add(tokens)?;
                if total == num_tokens && piece.can_end {
                    span.end_piece = index + 1;
                    spans.push(span);
                    return Some(spans);
                }
                if total > num_tokens {
                    return None;
                }
            }
            left_in_paragraph = left_in_paragraph.saturating_sub(1);
            at_paragraph_start = false;
            // The precomputed break count is for the untrimmed last piece, so a span that is
            // a single trimmed piece does not end a paragraph (rare: a final word without
            // punctuation).
            if left_in_paragraph == 0 && !last_piece_trimmed {
                let last = pieces.last()?;
                let with_break =
                    total - last.tokens + self.sentences[sentence].last_piece_break_tokens;
                // A break that would overshoot is postponed to the next sentence.
                if with_break <= num_tokens {
                    total = with_break;
                    span.paragraph_break = true;
                    at_paragraph_start = true;
                    left_in_paragraph = rng.random_range(SENTENCES_PER_PARAGRAPH);
                    if total == num_tokens && last.can_end {
                        spans.push(span);
                        return Some(spans);
                    }
                }
            }
            spans.push(span);
            sentence = order.next_after(sentence, rng);
            first_piece = 0;
        }
    }

    /// The text of a plan and the byte offset in it where each planned piece ends.
    fn render(&self, spans: &[Span]) -> (String, Vec<usize>) {
        let mut text = String::new();
        let mut piece_ends = Vec::new();
        for span in spans {
            let sentence = &self.sentences[span.sentence];
            let pieces = &sentence.pieces[span.first_piece..span.end_piece];
            let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
                continue;
            };
            let slice = &sentence.text[first.bytes.start..last.bytes.end];
            let kept = if span.trim_start {
                slice.trim_start()
            } else {
                slice
            };
            // Sentence offset b maps to text offset b - origin.
            let origin = first.bytes.start + (slice.len() - kept.len());
            let base = text.len();
            piece_ends.extend(pieces.iter().map(|p| base + p.bytes.end - origin));
            text.push_str(kept);
            if span.paragraph_break {
                text.push_str(PARAGRAPH_BREAK);
                // The break belongs to the sentence's last piece (`".\n\n"`).
                if let Some(end) = piece_ends.last_mut() {
                    *end = text.len();
                }
            }
        }
        (text, piece_ends)
    }

    /// Whether the tokenizer's own regex splits `text` exactly at `piece_ends`. If so, the
    /// text's token count is the sum of the planned pieces' counts — each computed by the
    /// full pipeline when the corpus was loaded — which the plan made `n`. Always false for
    /// tokenizers or texts the piecewise count does not apply to
    /// ([`count_tokens`](Self::count_tokens)).
    fn splits_as_planned(&self, text: &str, piece_ends: &[usize]) -> bool {
        let Some(regex) = self.split_regex.filter(|_| self.piecewise_applies(text)) else {
            return false;
        };
        let mut planned = piece_ends.iter();
        let mut previous_end = 0;
        for (start, end) in regex.find_iter(text) {
            // A gap before a match would be a piece of its own: not planned.
            if start != previous_end || planned.next() != Some(&end) {
                return false;
            }
            previous_end = end;
        }
        previous_end == text.len() && planned.next().is_none()
    }
}

/// Cycles through all sentences in a fresh random order per pass.
struct SentenceOrder {
    order: Vec<usize>,
    next: usize,
}

impl SentenceOrder {
    fn new(num_sentences: usize) -> Self {
        Self {
            order: (0..num_sentences).collect(),
            // Exhausted: the first call shuffles.
            next: num_sentences,
        }
    }

    /// The next sentence, never `previous` itself when there is a choice.
    fn next_after(&mut self, previous: usize, rng: &mut ChaCha8Rng) -> usize {
        if self.next >= self.order.len() {
            self.order.shuffle(rng);
            self.next = 0;
        }
        if self.order[self.next] == previous && self.order.len() > 1 {
            // Swap with the following one (or the one before, at the end of a pass).
            let other = if self.next + 1 < self.order.len() {
                self.next + 1
            } else {
                self.next - 1
            };
            self.order.swap(self.next, other);
        }
        self.next += 1;
        self.order[self.next - 1]
    }
}

/// Corpus paragraphs (separated by blank lines) with whitespace collapsed to single spaces.
fn paragraphs(corpus: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in corpus.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join(" "));
                current.clear();
            }
        } else {
            current.extend(line.split_whitespace());
        }
    }
    paragraphs
}

/// Byte ranges of the sentences of `paragraph`, given its pieces: a sentence ends after a
/// piece ending in `.`, `!` or `?`.
fn sentence_ranges(paragraph: &str, pieces: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for piece in pieces {
        if paragraph[piece.clone()]
            .trim_end()
            .ends_with(['.', '!', '?'])
        {
            ranges.push(start..piece.end);
            start = piece.end;
        }
    }
    if !paragraph[start..].trim().is_empty() {
        ranges.push(start..paragraph.len());
    }
    ranges
}

/// The regex of a `Sequence[Split(regex, isolated), ByteLevel(no regex, no prefix space)]`
/// pre-tokenizer (Qwen2/Qwen3, Llama 3), under which a text's tokens are the BPE tokens of
/// each regex piece.
fn byte_level_split_regex(hf: &tokenizers::Tokenizer) -> Option<&SysRegex> {
    let PreTokenizerWrapper::Sequence(sequence) = hf.get_pre_tokenizer()? else {
        return None;
    };
    let [PreTokenizerWrapper::Split(split), PreTokenizerWrapper::ByteLevel(byte_level)] =
        sequence.as_ref()
    else {
        return None;
    };
    let plain_split = split.behavior == SplitDelimiterBehavior::Isolated && !split.invert;
    let plain_byte_level = !byte_level.use_regex && !byte_level.add_prefix_space;
    (plain_split && plain_byte_level).then_some(&split.regex)
}

/// Splits `text` with the tokenizer's normalizer and pre-tokenizer into byte ranges that
/// tile it.
fn pre_tokenize(tokenizer: &Tokenizer, text: &str) -> Result<Vec<Range<usize>>> {
    let hf = tokenizer.inner();
    let pre_tokenizer = hf.get_pre_tokenizer().ok_or_else(|| {
        Error::Tokenizer(format!(
            "tokenizer {} has no pre-tokenizer; exact prompt synthesis needs one",
            tokenizer.reference()
        ))
    })?;
    let mut normalized = NormalizedString::from(text);
    if let Some(normalizer) = hf.get_normalizer() {
        normalizer
            .normalize(&mut normalized)
            .map_err(|e| Error::Tokenizer(format!("normalizing: {e}")))?;
    }
    let mut pre_tokenized = PreTokenizedString::from(normalized);
    pre_tokenizer
        .pre_tokenize(&mut pre_tokenized)
        .map_err(|e| Error::Tokenizer(format!("pre-tokenizing: {e}")))?;
    let ranges: Vec<Range<usize>> = pre_tokenized
        .get_splits(OffsetReferential::Original, OffsetType::Byte)
        .into_iter()
        .map(|(_, (start, end), _)| start..end)
        .collect();
    let tiles = ranges.first().is_none_or(|r| r.start == 0)
        && ranges.windows(2).all(|w| w[0].end == w[1].start)
        && ranges
            .last()
            .map_or(text.is_empty(), |r| r.end == text.len());
    if !tiles {
        return Err(Error::Tokenizer(format!(
            "the pre-tokenizer of {} drops or reorders characters; exact prompt synthesis \
             needs pieces that cover the text",
            tokenizer.reference()
        )));
    }
    Ok(ranges)
}

/// Counts tokens of pieces, each distinct piece encoded once.
struct PieceCounter<'t> {
    tokenizer: &'t Tokenizer,
    cache: HashMap<String, u32>,
}

impl PieceCounter<'_> {
    fn count(&mut self, text: &str) -> Result<u32> {
        if let Some(&tokens) = self.cache.get(text) {
            return Ok(tokens);
        }
        let tokens = u32::try_from(self.tokenizer.count_tokens(text)?)
            .map_err(|_| Error::Tokenizer("a corpus piece has over 2^32 tokens".to_string()))?;
        self.cache.insert(text.to_string(), tokens);
        Ok(tokens)
    }

    /// Splits a canonical sentence into counted pieces and checks that the counts add up
    /// in the two contexts the synthesizer uses (mid-paragraph, and paragraph start and
    /// end).
    fn sentence(&mut self, text: String) -> Result<Sentence> {
        let mut pieces = Vec::new();
        for bytes in pre_tokenize(self.tokenizer, &text)? {
            let piece_text = &text[bytes.clone()];
            let trimmed = piece_text.trim_start();
            pieces.push(Piece {
                tokens: self.count(piece_text)?,
                leading_tokens: self.count(trimmed)?,
                can_start: trimmed.starts_with(char::is_alphabetic),
                can_end: !trimmed.is_empty(),
                bytes,
            });
        }
        let Some(last) = pieces.last() else {
            return Err(Error::InvalidInput(
                "empty sentence in the corpus".to_string(),
            ));
        };
        let last_piece_break_tokens =
            self.count(&format!("{}{PARAGRAPH_BREAK}", &text[last.bytes.clone()]))?;
        let sentence = Sentence {
            text,
            pieces,
            last_piece_break_tokens,
        };
        self.check_additive(&sentence)?;
        Ok(sentence)
    }

    fn check_additive(&self, sentence: &Sentence) -> Result<()> {
        let (Some(first), Some(last)) = (sentence.pieces.first(), sentence.pieces.last()) else {
            return Ok(());
        };
        let inner: u32 = sentence.pieces.iter().map(|p| p.tokens).sum();
        let mut checks = vec![(sentence.text.clone(), inner)];
        // Paragraph form: first piece trimmed, last piece followed by a break. A one-piece
        // sentence is never used in that form (see `plan`).
        if sentence.pieces.len() > 1 {
            let paragraph = inner - first.tokens - last.tokens
                + first.leading_tokens
                + sentence.last_piece_break_tokens;
            let text = format!("{}{PARAGRAPH_BREAK}", sentence.text.trim_start());
            checks.push((text, paragraph));
        }
        for (text, expected) in checks {
            let actual = self.tokenizer.count_tokens(&text)?;
            if actual != expected as usize {
                return Err(Error::Tokenizer(format!(
                    "tokenizer {} does not count additively over its pre-tokenizer pieces \
                     ({text:?}: {actual} tokens, pieces sum to {expected}); exact-length \
                     prompts cannot be built with it",
                    self.tokenizer.reference()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_collapse_whitespace() {
        let corpus = "  One  two.\nThree.\n\n\n Four!   \n\n";
        assert_eq!(paragraphs(corpus), vec!["One two. Three.", "Four!"]);
        assert!(paragraphs("\n \n").is_empty());
    }

    #[test]
    fn sentences_end_at_terminal_punctuation() {
        let text = "Go now. Is it? Yes! tail";
        // Pieces as Qwen3 splits them.
        let pieces = [
            0..2,
            2..6,
            6..7,
            7..10,
            10..13,
            13..14,
            14..18,
            18..19,
            19..24,
        ];
        let ranges = sentence_ranges(text, &pieces);
        let sentences: Vec<&str> = ranges.into_iter().map(|r| &text[r]).collect();
        assert_eq!(sentences, vec!["Go now.", " Is it?", " Yes!", " tail"]);
    }

    /// The fast check must actually be taken with Qwen3: the tokenizer's regex splits every
    /// planned text exactly where the plan says (else synthesis silently falls back to a
    /// slower count).
    #[test]
    fn qwen3_splits_every_plan_as_planned() {
        let tokenizer = Tokenizer::bundled_qwen3().unwrap();
        let synthesizer = PromptSynthesizer::new(&tokenizer).unwrap();
        assert!(synthesizer.split_regex.is_some());
        let mut rng = derive_rng(0, "test", 0);
        let mut checked = 0;
        for num_tokens in (1..400).chain([1000, 5000]) {
            let Some(spans) = synthesizer.plan(num_tokens, &mut rng) else {
                continue;
            };
            let (text, piece_ends) = synthesizer.render(&spans);
            assert!(
                synthesizer.splits_as_planned(&text, &piece_ends),
                "{num_tokens}: {text:?}"
            );
            assert_eq!(tokenizer.count_tokens(&text).unwrap(), num_tokens as usize);
            checked += 1;
        }
        // Most starts fit (a miss needs the target to fall inside a multi-token piece).
        assert!(checked > 300, "only {checked} of 401 plans fit");
        // A plan whose pieces are shifted by one byte is rejected.
        let spans = synthesizer
            .plan(50, &mut rng)
            .or_else(|| synthesizer.plan(50, &mut rng));
        let (text, mut piece_ends) = synthesizer.render(&spans.unwrap());
        piece_ends[0] += 1;
        assert!(!synthesizer.splits_as_planned(&text, &piece_ends));
    }

    #[test]
    fn sentence_order_cycles_without_immediate_repeats() {
        let mut rng = derive_rng(1, "test", 0);
        let mut order = SentenceOrder::new(5);
        let mut previous = 0;
        let mut seen = Vec::new();
        for _ in 0..50 {
            let next = order.next_after(previous, &mut rng);
            assert_ne!(next, previous);
            seen.push(next);
            previous = next;
        }
        // Each pass of 5 is a permutation.
        for pass in seen.chunks(5) {
            let mut sorted = pass.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        }
    }
}
