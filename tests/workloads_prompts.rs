//! The bundled Qwen3 tokenizer and exact-length prompt synthesis.

#![cfg(feature = "prompts")]

use std::sync::OnceLock;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use simreal::workloads::tokenizer::BUNDLED_QWEN3_SHA256;
use simreal::workloads::{
    PromptSpec, PromptSynthesizer, RequestLengths, Tokenizer, TokenizerSource, Workload,
};
use simreal::Error;

/// Loading parses an 11 MB JSON; every test shares one copy.
fn qwen3() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| Tokenizer::load(&TokenizerSource::BundledQwen3).unwrap())
}

fn synthesizer() -> &'static PromptSynthesizer<'static> {
    static SYNTHESIZER: OnceLock<PromptSynthesizer<'static>> = OnceLock::new();
    SYNTHESIZER.get_or_init(|| PromptSynthesizer::new(qwen3()).unwrap())
}

/// Expected ids computed once with the Python `tokenizers` package (PyPI, 0.23.3) on the
/// same file (`assets/tokenizer/qwen3/tokenizer.json.gz`, uncompressed):
/// `Tokenizer.from_file("tokenizer.json").encode(s, add_special_tokens=False).ids`.
#[test]
fn bundled_qwen3_token_ids_are_pinned() {
    let cases: &[(&str, &[u32])] = &[
        ("Hello, world!", &[9707, 11, 1879, 0]),
        (
            "The quick brown fox jumps over the lazy dog.",
            &[785, 3974, 13876, 38835, 34208, 916, 279, 15678, 5562, 13],
        ),
        (
            "Qwen3 runs at 1234.5 tokens/s \u{2014} \u{65e5}\u{672c}\u{8a9e} \u{2713}",
            &[
                48, 16948, 18, 8473, 518, 220, 16, 17, 18, 19, 13, 20, 11211, 2687, 1959, 75402,
                21894, 102819, 52375,
            ],
        ),
        (
            "  two spaces, then\n\nnewlines.",
            &[220, 1378, 12621, 11, 1221, 271, 931, 7969, 13],
        ),
        (
            "<|im_start|>user\nhi<|im_end|>",
            &[151644, 872, 198, 6023, 151645],
        ),
        ("don't", &[15007, 944]),
    ];
    let tokenizer = qwen3();
    for (text, ids) in cases {
        assert_eq!(tokenizer.encode(text).unwrap(), *ids, "{text:?}");
        assert_eq!(tokenizer.count_tokens(text).unwrap(), ids.len());
        assert_eq!(tokenizer.decode(ids).unwrap(), *text);
    }
    assert_eq!(
        tokenizer.reference(),
        format!("bundled:qwen3@sha256:{}", &BUNDLED_QWEN3_SHA256[..16])
    );
}

/// The fast piecewise count must agree with the full pipeline on anything: prompts,
/// random character soup full of whitespace and punctuation runs, Unicode, special tokens.
#[test]
fn piecewise_count_equals_a_full_encode() {
    let s = synthesizer();
    let tokenizer = qwen3();
    let mut texts: Vec<String> = vec![
        String::new(),
        " ".into(),
        "   leading and trailing   ".into(),
        "Tabs\tand\r\nCRLF\n\n\n  indented".into(),
        "Qwen3 runs at 1234.5 tokens/s \u{2014} \u{65e5}\u{672c}\u{8a9e}".into(),
        "<|im_start|>user\nhi<|im_end|>".into(),
        "He said: \"It's 5 o'clock,\" and LEFT!!! ...".into(),
    ];
    let alphabet: Vec<char> = "aAbZ '\".,!?;:-()[]{}<>|/\\09\n\t\r  ".chars().collect();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for _ in 0..2000 {
        let len = rng.random_range(0..60);
        texts.push(
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect(),
        );
    }
    for spec_len in [1, 7, 300, 3000] {
        texts.push(s.synthesize(spec_len, 5, u64::from(spec_len)).unwrap());
    }
    for text in &texts {
        assert_eq!(
            s.count_tokens(text).unwrap(),
            tokenizer.count_tokens(text).unwrap(),
            "{text:?}"
        );
    }
}

/// Synthesizes `specs` and checks every text's length twice more: with the piecewise count,
/// and — for the specs `full_check` selects — with a full encode by the `tokenizers`
/// pipeline (about 15x slower, hence not for all 8 million tokens of the 1..4096 sweep).
fn assert_exact(
    specs: &[PromptSpec],
    seed: u64,
    full_check: impl Fn(&PromptSpec) -> bool + Sync,
) -> Vec<String> {
    let prompts = synthesizer().synthesize_all(specs, seed).unwrap();
    let tokenizer = qwen3();
    prompts.par_iter().zip(specs).for_each(|(prompt, spec)| {
        assert_eq!(prompt.prompt_id, spec.prompt_id);
        assert_eq!(prompt.num_tokens, spec.num_tokens);
        let expected = spec.num_tokens as usize;
        let describe = || {
            format!(
                "prompt {} ({expected} tokens): {:?}",
                spec.prompt_id, prompt.text
            )
        };
        assert_eq!(
            synthesizer().count_tokens(&prompt.text).unwrap(),
            expected,
            "{}",
            describe()
        );
        if full_check(spec) {
            assert_eq!(
                tokenizer.encode(&prompt.text).unwrap().len(),
                expected,
                "{}",
                describe()
            );
        }
    });
    prompts.into_iter().map(|p| p.text).collect()
}

#[test]
fn every_length_from_1_to_4096_is_exact() {
    let specs: Vec<PromptSpec> = (1..=4096u32)
        .map(|n| PromptSpec {
            prompt_id: u64::from(n),
            num_tokens: n,
        })
        .collect();
    let started = Instant::now();
    let texts = assert_exact(&specs, 42, |spec| {
        spec.num_tokens <= 512 || spec.num_tokens % 13 == 0
    });
    eprintln!(
        "4096 prompts, {} tokens in all, synthesized and checked in {:.2?}",
        specs.iter().map(|s| u64::from(s.num_tokens)).sum::<u64>(),
        started.elapsed()
    );
    // Shortest prompts are single words; none starts or ends with whitespace.
    assert!(texts[0].chars().all(char::is_alphabetic), "{:?}", texts[0]);
    assert!(texts.iter().all(|t| !t.starts_with(char::is_whitespace)));
}

#[test]
fn random_and_very_long_lengths_are_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let mut specs: Vec<PromptSpec> = (0..100)
        .map(|i| PromptSpec {
            prompt_id: i,
            num_tokens: rng.random_range(1..=16_384),
        })
        .collect();
    // Far beyond the corpus (about 2 200 tokens), which must repeat with variation.
    specs.push(PromptSpec {
        prompt_id: 1000,
        num_tokens: 40_960,
    });
    let texts = assert_exact(&specs, 7, |_| true);
    let longest = texts.last().unwrap();
    assert!(longest.contains("\n\n"), "paragraphs are kept");
    // Repetition varies: the first and second 2 000 bytes of a long prompt differ.
    assert_ne!(&longest[..2000], &longest[2000..4000]);
}

#[test]
fn prompts_are_deterministic_and_distinct() {
    let s = synthesizer();
    let a = s.synthesize(300, 1, 5).unwrap();
    assert_eq!(a, s.synthesize(300, 1, 5).unwrap());
    assert_ne!(a, s.synthesize(300, 2, 5).unwrap());
    assert_ne!(a, s.synthesize(300, 1, 6).unwrap());

    let specs: Vec<PromptSpec> = (0..500)
        .map(|prompt_id| PromptSpec {
            prompt_id,
            num_tokens: 128,
        })
        .collect();
    let mut texts = assert_exact(&specs, 3, |_| true);
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 500, "prompts of the same length must differ");
}

#[test]
fn zero_tokens_is_rejected() {
    assert!(matches!(
        synthesizer().synthesize(0, 1, 1).unwrap_err(),
        Error::InvalidInput(_)
    ));
}

#[test]
fn a_synthetic_workload_gets_exact_prompts_fast() {
    // 2 000 requests of 1-4k prompt tokens: the scale of a real benchmark.
    let lengths = simreal::workloads::LengthsConfig::Uniform {
        min_tokens: 1100,
        max_tokens: Some(4300),
        prefill_to_decode_ratio: 10.0,
    };
    let workload = Workload::synthetic(
        &lengths,
        &simreal::workloads::IntervalsConfig::Poisson {
            max_gap_mean_multiple: None,
        },
        2.0,
        2000,
        11,
        40_960,
    )
    .unwrap();
    let started = Instant::now();
    let prompts = synthesizer()
        .synthesize_all(&workload.prompt_specs(), 11)
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!("2000 prompts of 1-4k tokens: {elapsed:.2?}");
    for (
        prompt,
        RequestLengths {
            num_prefill_tokens, ..
        },
    ) in prompts.iter().zip(&workload.lengths)
    {
        assert_eq!(prompt.num_tokens, *num_prefill_tokens);
    }
}

#[test]
fn tiny_custom_corpora_work_or_fail_cleanly() {
    let tokenizer = qwen3();
    assert!(matches!(
        PromptSynthesizer::with_corpus(tokenizer, " \n\n ").unwrap_err(),
        Error::InvalidInput(_)
    ));
    // One-word fragments, odd spacing and no final punctuation: still exact at every length.
    let corpus = "Short one.   tail\n\nAnother   paragraph, here!\nWith a line break?\n\nend";
    let synthesizer = PromptSynthesizer::with_corpus(tokenizer, corpus).unwrap();
    for num_tokens in 1..=300 {
        let text = synthesizer
            .synthesize(num_tokens, 1, u64::from(num_tokens))
            .unwrap();
        assert_eq!(
            tokenizer.count_tokens(&text).unwrap(),
            num_tokens as usize,
            "{text:?}"
        );
    }
}
