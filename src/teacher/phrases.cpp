#include "instinct/teacher/phrases.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "instinct/common/error.h"
#include "instinct/io/sha256.h"
#ifdef INSTINCT_WITH_TOKENIZER
#include "instinct/text/tokenizer.h"
#endif

namespace instinct::teacher {

std::vector<std::string> read_vocabulary(const std::string& path) {
  std::ifstream in(path);
  INSTINCT_CHECK(in.is_open(), "vocabulary ", path, ": cannot open it");
  std::vector<std::string> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const auto b = line.find_first_not_of(" \t\r\n"), e = line.find_last_not_of(" \t\r\n");
    if (b == std::string::npos || line[b] == '#') continue;
    std::string p = line.substr(b, e - b + 1);
    INSTINCT_CHECK(std::find(out.begin(), out.end(), p) == out.end(), "vocabulary ", path, ":", n, ": phrase '", p,
                   "' is listed twice");
    out.push_back(std::move(p));
  }
  INSTINCT_CHECK(!out.empty(), "vocabulary ", path, ": no phrases (one per line)");
  return out;
}

std::vector<std::string> phrase_modules(const BundleInfo& info) {
  std::vector<std::string> out;
  for (const char* k : {"concept_bank", "text_encoder"})
    if (info.modules.count(k)) out.push_back(k);
  return out;
}

namespace {
bool has_encoder(const TeacherBundle& b) { return b.has("text_encoder") && !b.info().tokenizer.file.empty(); }
}  // namespace

bool can_encode(const TeacherBundle& bundle, const std::string& phrase) {
  return (bundle.has("concept_bank") && bundle.info().concept_id(phrase) >= 0) || has_encoder(bundle);
}

PhraseTable encode_phrases(const TeacherBundle& bundle, const std::vector<std::string>& phrases,
                           const c10::Device& device, const std::string& what) {
  const auto& info = bundle.info();
  INSTINCT_CHECK(!phrases.empty(), what, ": no phrases to encode");
  PhraseTable t;
  t.phrases = phrases;
  std::vector<int64_t> bank_rows, bank_ids, enc_rows;
  std::vector<std::string> enc_phrases;
  for (size_t k = 0; k < phrases.size(); ++k) {
    const int id = bundle.has("concept_bank") ? info.concept_id(phrases[k]) : -1;
    if (id >= 0) {
      bank_rows.push_back(int64_t(k));
      bank_ids.push_back(id);
    } else {
      INSTINCT_CHECK(has_encoder(bundle), what, " '", phrases[k], "' is not in the concept bank of teacher bundle ", info.dir,
                     " and the bundle has no text encoder to encode it (export one with scripts/export_sam3.py, "
                     "or use phrases from its bundle.json 'concepts')");
      enc_rows.push_back(int64_t(k));
      enc_phrases.push_back(phrases[k]);
    }
  }
  torch::NoGradGuard ng;
  const int64_t K = int64_t(phrases.size()), L = info.prompt_length, D = info.neck_channels;
  t.text = torch::zeros({K, L, D}, torch::TensorOptions().device(device));
  t.pad = torch::ones({K, L}, torch::TensorOptions().dtype(torch::kBool).device(device));
  auto put = [&](const std::vector<int64_t>& rows, const at::Tensor& text, const at::Tensor& pad) {
    auto r = torch::tensor(rows, torch::kLong).to(device);
    t.text.index_copy_(0, r, text.to(device, torch::kFloat));
    t.pad.index_copy_(0, r, pad.to(device, torch::kBool));
  };
  if (!bank_rows.empty()) {
    auto [text, pad] = bundle.concepts(torch::tensor(bank_ids, torch::kLong).to(device));
    put(bank_rows, text, pad);
    t.from_bank = int64_t(bank_rows.size());
  }
  if (!enc_rows.empty()) {
    const std::string vocab = (std::filesystem::path(info.dir) / info.tokenizer.file).string();
    INSTINCT_CHECK(std::filesystem::is_regular_file(vocab), "teacher bundle ", info.dir, ": missing tokenizer file ", vocab);
    const std::string sha = io::sha256_file(vocab);
    INSTINCT_CHECK(sha == info.tokenizer.sha256, "teacher bundle ", info.dir, ": sha256 mismatch for ", vocab,
                   ": bundle.json says ", info.tokenizer.sha256, ", file has ", sha);
#ifndef INSTINCT_WITH_TOKENIZER
    fail(what, " '", enc_phrases[0], "' is not in the concept bank of teacher bundle ", info.dir,
         ", and this build has no tokenizer to encode it (configured with INSTINCT_WITH_TOKENIZER=OFF)");
#else
    const auto tok = text::ClipTokenizer::load(vocab);
    constexpr size_t kChunk = 64;
    for (size_t s = 0; s < enc_phrases.size(); s += kChunk) {
      const size_t n = std::min(kChunk, enc_phrases.size() - s);
      std::vector<std::string> chunk(enc_phrases.begin() + long(s), enc_phrases.begin() + long(s + n));
      auto ids = tok.tokenize_batch(chunk, int(L));
      auto ids_t = torch::from_blob(ids.data(), {int64_t(n), L}, torch::kLong).clone().to(device);
      auto [text, pad] = bundle.text_encoder(ids_t);
      put(std::vector<int64_t>(enc_rows.begin() + long(s), enc_rows.begin() + long(s + n)), text, pad);
    }
    t.from_encoder = int64_t(enc_rows.size());
#endif
  }
  return t;
}

void save_concept_bank(const TeacherBundle& bundle, const PhraseTable& table, const std::string& path) {
  bundle.save_module("concept_bank", path, {{"text", table.text.cpu().contiguous()}, {"pad", table.pad.cpu().contiguous()}});
}

}  // namespace instinct::teacher
