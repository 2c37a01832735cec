// Teacher bundle loader (instinct/teacher/bundle.h) and SHA-256 (instinct/io/sha256.h).
// Fixtures: tests/python/fixtures_teacher.py -> $INSTINCT_FIXTURES/teacher.
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <fstream>
#include <iostream>
#include <iterator>

#include "instinct/common/error.h"
#include "instinct/io/sha256.h"
#include "instinct/merge/merge.h"
#include "instinct/model/trunk_io.h"
#include "instinct/teacher/bundle.h"
#include "test_helpers.h"

namespace fs = std::filesystem;
using instinct::teacher::BundleLoadOptions;
using instinct::teacher::TeacherBundle;

namespace {

#define REQUIRE_FIXTURES()                                                               \
  const std::string fx = instinct::test::fixture_dir("teacher");                          \
  ASSERT_TRUE(fs::exists(fs::path(fx) / "bundle" / "bundle.json")) << "missing fixtures in " << fx

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// reference.pt: a torch.save'd plain dict of tensors.
std::map<std::string, at::Tensor> load_reference(const std::string& path) {
  std::string bytes = read_text(path);
  std::vector<char> buf(bytes.begin(), bytes.end());
  auto iv = torch::pickle_load(buf);
  std::map<std::string, at::Tensor> out;
  for (const auto& kv : iv.toGenericDict()) out[kv.key().toStringRef()] = kv.value().toTensor();
  return out;
}

// Expects `fn` to throw instinct::Error whose one-line message contains every `needle`.
template <typename Fn>
std::string expect_error(Fn fn, std::vector<std::string> needles) {
  try {
    fn();
  } catch (const instinct::Error& e) {
    std::string msg = e.what();
    std::cout << "  error: " << msg << "\n";
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "missing '" << n << "' in: " << msg;
    return msg;
  }
  ADD_FAILURE() << "expected instinct::Error";
  return {};
}

void expect_close(const at::Tensor& got, const at::Tensor& want, const char* what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  if (want.scalar_type() == at::kBool) {
    EXPECT_TRUE(at::equal(got, want)) << what;
    return;
  }
  const double err = (got - want).abs().max().item<double>();
  EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5)) << what << ": max abs err " << err;
}

const std::vector<std::string> kAll = {"trunk",    "detector_neck", "interactive_neck",
                                       "grounding", "sam_head",     "concept_bank"};

std::string tmp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("instinct_test_bundle_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

// A student bundle made with instinct-merge bundle from the fixture bundle at `fx` and a 64 px
// student (width 128, seed 5; heads = width / 64, as the trunk-file loader assumes) written to
// <dir>/student.pt; the merged bundle is <dir>/out. Returns the merge options and the student.
std::pair<instinct::merge::BundleMergeOptions, instinct::model::StudentTrunk> make_student_bundle(
    const std::string& fx, const std::string& dir, const instinct::teacher::BundleInfo& info) {
  instinct::model::VitConfig vc;
  vc.preset = "custom"; vc.img_size = 64; vc.patch = 16; vc.width = 128; vc.depth = 2; vc.heads = 2;
  vc.out_channels = info.trunk_channels; vc.out_grid = info.trunk_grid;
  torch::manual_seed(5);
  instinct::model::StudentTrunk student(vc);
  student->eval();
  instinct::model::save_trunk_file(dir + "/student.pt", *student);
  instinct::merge::BundleMergeOptions o;
  o.bundle = fx + "/bundle";
  o.trunk = dir + "/student.pt";
  o.output = dir + "/out";
  instinct::merge::merge_bundle(o);
  return {o, student};
}

}  // namespace

// ---------------------------------------------------------------------------------------- SHA-256

TEST(Sha256, Fips180Vectors) {
  using instinct::io::sha256_hex;
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, StreamingChunksMatchOneShot) {
  std::string msg;
  for (int i = 0; i < 1000; ++i) msg.push_back(static_cast<char>((i * 131 + 7) & 0xff));
  const std::string want = instinct::io::sha256_hex(msg);
  for (size_t chunk : {1, 3, 55, 56, 63, 64, 65, 127, 999}) {
    instinct::io::Sha256 h;
    for (size_t i = 0; i < msg.size(); i += chunk) h.update(msg.data() + i, std::min(chunk, msg.size() - i));
    EXPECT_EQ(h.hex_digest(), want) << "chunk " << chunk;
    EXPECT_EQ(h.hex_digest(), want) << "digest is idempotent";
  }
  // Padding boundaries: lengths around one block.
  for (size_t n : {55, 56, 57, 63, 64, 65}) {
    instinct::io::Sha256 a, b;
    a.update(msg.data(), n);
    for (size_t i = 0; i < n; ++i) b.update(msg.data() + i, 1);
    EXPECT_EQ(a.hex_digest(), b.hex_digest()) << n;
  }
}

TEST(Sha256, FileMatchesPythonHashlib) {
  REQUIRE_FIXTURES();
  const std::string path = fx + "/sha/data.bin";
  std::string want = read_text(path + ".sha256");
  want = want.substr(0, 64);
  EXPECT_EQ(instinct::io::sha256_file(path), want);
}

TEST(Sha256, MissingFileNamesPath) {
  expect_error([] { instinct::io::sha256_file("/nonexistent/dir/file.bin"); }, {"/nonexistent/dir/file.bin"});
}

// ------------------------------------------------------------------------------------ bundle.json

TEST(BundleInfo, ReadsReferenceBundle) {
  REQUIRE_FIXTURES();
  auto info = instinct::teacher::read_bundle_info(fx + "/bundle");
  EXPECT_EQ(info.image_size, 224);
  EXPECT_EQ(info.resize, "squash");
  EXPECT_FLOAT_EQ(info.pixel_mean[1], 0.5f);
  EXPECT_FLOAT_EQ(info.pixel_std[2], 0.5f);
  EXPECT_EQ(info.trunk_channels, 128);
  EXPECT_EQ(info.trunk_grid, 16);
  EXPECT_EQ(info.patch, 14);
  EXPECT_EQ(info.neck_channels, 64);
  EXPECT_EQ(info.num_queries, 16);
  EXPECT_EQ(info.mask_size, 64);
  EXPECT_EQ(info.prompt_length, 8);
  EXPECT_EQ(info.concepts.size(), 12u);
  EXPECT_EQ(info.concept_id("star"), 3);
  EXPECT_EQ(info.concept_id("unicorn"), -1);
  EXPECT_EQ(info.modules.size(), 6u);
  EXPECT_EQ(info.modules.at("trunk").first, "trunk.pt");
  EXPECT_EQ(info.modules.at("trunk").second.size(), 64u);
}

TEST(BundleInfo, MissingJsonNamesPath) {
  const std::string d = tmp_dir("nojson");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {d + "/bundle.json", "missing"});
  fs::remove_all(d);
}

TEST(BundleInfo, BadFieldsNameFileAndKey) {
  REQUIRE_FIXTURES();
  const std::string src = read_text(fx + "/bundle/bundle.json");
  const std::string d = tmp_dir("badkey");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = src;
    auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    s.replace(pos, from.size(), to);
    std::ofstream(d + "/bundle.json") << s;
  };
  with("\"mask_size\": 64", "\"mask_size\": 63");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {d + "/bundle.json", "'mask_size'", "64"});
  with("\"resize\": \"squash\"", "\"resize\": \"stretch\"");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"bundle.json", "'resize'", "stretch"});
  with("\"grid\": 16", "\"grid\": \"16\"");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"bundle.json", "'trunk.grid'", "integer"});
  with("\"trunk\": {", "\"trunkx\": {");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"bundle.json", "'trunk'", "missing"});
  with("\"concept_bank\": {", "\"speech_encoder\": {");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'modules.speech_encoder'", "unknown module"});
  with("\"version\": 1", "\"version\": 3");
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'version'", "expected 1 or 2", "3"});
  std::ofstream(d + "/bundle.json") << "{ not json";
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {d + "/bundle.json", "not valid JSON"});
  fs::remove_all(d);
}

// Rewrites the fixture's bundle.json through `edit` into `d` (module files hard-linked in, or copied:
// a symlink leading out of the bundle directory is refused).
static void edited_bundle(const std::string& fx, const std::string& d, const std::function<void(nlohmann::json&)>& edit) {
  auto j = nlohmann::json::parse(read_text(fx + "/bundle/bundle.json"));
  edit(j);
  for (const auto& e : fs::directory_iterator(fx + "/bundle"))
    if (e.path().filename() != "bundle.json" && !fs::exists(d + "/" + e.path().filename().string())) {
      std::error_code ec;
      fs::create_hard_link(e.path(), d + "/" + e.path().filename().string(), ec);
      if (ec) fs::copy_file(e.path(), d + "/" + e.path().filename().string());
    }
  std::ofstream(d + "/bundle.json") << j.dump(1);
}

TEST(BundleInfo, TrunkOnlyBundleNeedsNoConcepts) {
  REQUIRE_FIXTURES();
  const std::string d = tmp_dir("trunkonly");
  edited_bundle(fx, d, [](nlohmann::json& j) {
    j.erase("concepts");
    j["modules"] = nlohmann::json{{"trunk", j["modules"]["trunk"]}};
  });
  auto info = instinct::teacher::read_bundle_info(d);
  EXPECT_TRUE(info.concepts.empty());
  auto t = instinct::teacher::TeacherBundle::load(d);  // trunk only, shape-validated
  EXPECT_TRUE(t.has("trunk"));
  edited_bundle(fx, d, [](nlohmann::json& j) { j.erase("concepts"); });  // the bank without names is refused
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'concepts'", "must not be empty"});
  fs::remove_all(d);
}

TEST(BundleInfo, Version2FieldsParsedAndChecked) {
  REQUIRE_FIXTURES();
  const std::string d = tmp_dir("v2");
  const std::string hex(64, 'a');
  auto v2 = [&](const std::function<void(nlohmann::json&)>& more) {
    edited_bundle(fx, d, [&](nlohmann::json& j) {
      j["version"] = 2;
      j["sam_head"] = {{"mask_tokens", 3}, {"padding_point", "appended"}, {"stability_delta", 0.1},
                       {"stability_thresh", 0.9}, {"mask_threshold", 0.0}, {"fill_hole_area", 256}};
      j["tokenizer"] = {{"type", "clip_bpe"}, {"file", "vocab.txt.gz"}, {"sha256", hex}, {"context_length", 8}};
      more(j);
    });
  };
  v2([](nlohmann::json&) {});
  auto info = instinct::teacher::read_bundle_info(d);
  EXPECT_EQ(info.version, 2);
  EXPECT_EQ(info.sam_head.mask_tokens, 3);
  EXPECT_FLOAT_EQ(info.sam_head.stability_delta, 0.1f);
  EXPECT_FLOAT_EQ(info.sam_head.stability_thresh, 0.9f);
  EXPECT_EQ(info.sam_head.fill_hole_area, 256);
  EXPECT_EQ(info.tokenizer.file, "vocab.txt.gz");
  EXPECT_EQ(info.tokenizer.context_length, 8);
  auto v1 = instinct::teacher::read_bundle_info(fx + "/bundle");  // version 1: SAM-head defaults, no tokenizer
  EXPECT_EQ(v1.version, 1);
  EXPECT_EQ(v1.sam_head.mask_tokens, 3);
  EXPECT_EQ(v1.sam_head.fill_hole_area, 0);
  EXPECT_TRUE(v1.tokenizer.file.empty());
  v2([](nlohmann::json& j) { j["sam_head"]["mask_tokens"] = 5; });
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'sam_head.mask_tokens'", "3 or 4", "5"});
  v2([](nlohmann::json& j) { j["sam_head"]["padding_point"] = "none"; });
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'sam_head.padding_point'", "appended"});
  v2([](nlohmann::json& j) { j["sam_head"]["fill_hole_area"] = -1; });
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'sam_head.fill_hole_area'", "-1"});
  v2([](nlohmann::json& j) { j["tokenizer"]["context_length"] = 32; });
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'tokenizer.context_length'", "prompt_length = 8", "32"});
  v2([](nlohmann::json& j) { j["tokenizer"]["file"] = "../vocab.txt.gz"; });
  expect_error([&] { instinct::teacher::read_bundle_info(d); }, {"'tokenizer.file'", "plain file name"});
  // The SAM head's declared token count is validated against the module's outputs (3 here).
  v2([](nlohmann::json& j) { j["sam_head"]["mask_tokens"] = 4; });
  instinct::teacher::BundleLoadOptions o;
  o.modules = {"sam_head"};
  expect_error([&] { instinct::teacher::TeacherBundle::load(d, o); }, {"sam_head.pt", "'masks'", "[1, 4, 64, 64]"});
  fs::remove_all(d);
}

// --------------------------------------------------------------------------------- TeacherBundle

TEST(BundleLoad, AllModulesLoadValidateAndFreeze) {
  REQUIRE_FIXTURES();
  BundleLoadOptions opts;
  opts.modules = kAll;
  auto t = TeacherBundle::load(fx + "/bundle", opts);
  for (const auto& k : kAll) EXPECT_TRUE(t.has(k)) << k;
  auto t1 = TeacherBundle::load(fx + "/bundle");  // default: trunk only
  EXPECT_TRUE(t1.has("trunk"));
  EXPECT_FALSE(t1.has("grounding"));
  expect_error([&] { t1.detector_neck(at::zeros({1, 128, 16, 16})); }, {"detector_neck", "not loaded"});
  BundleLoadOptions bad;
  bad.modules = {"speech_encoder"};
  expect_error([&] { TeacherBundle::load(fx + "/bundle", bad); }, {"unknown module 'speech_encoder'", "trunk"});
  bad.modules = {"text_encoder"};  // a valid key this (version 1) bundle does not list
  expect_error([&] { TeacherBundle::load(fx + "/bundle", bad); }, {"module 'text_encoder' is not listed", "concept_bank"});
}

TEST(BundleLoad, OutputsMatchEagerPython) {
  REQUIRE_FIXTURES();
  BundleLoadOptions opts;
  opts.modules = kAll;
  auto t = TeacherBundle::load(fx + "/bundle", opts);
  auto r = load_reference(fx + "/reference.pt");
  torch::NoGradGuard ng;
  expect_close(t.trunk(r.at("pixels")), r.at("feats"), "feats");
  auto [f0, f1, f2] = t.detector_neck(r.at("feats"));
  expect_close(f0, r.at("fpn0"), "fpn0");
  expect_close(f1, r.at("fpn1"), "fpn1");
  expect_close(f2, r.at("fpn2"), "fpn2");
  auto [emb, s0, s1] = t.interactive_neck(r.at("feats"));
  expect_close(emb, r.at("emb"), "emb");
  expect_close(s0, r.at("s0"), "s0");
  expect_close(s1, r.at("s1"), "s1");
  auto [text, pad] = t.concepts(r.at("ids"));
  expect_close(text, r.at("text"), "text");
  expect_close(pad, r.at("text_pad"), "text_pad");
  auto g = t.grounding(r.at("fpn0"), r.at("fpn1"), r.at("fpn2"), r.at("text"), r.at("text_pad"));
  expect_close(g.logits, r.at("g_logits"), "logits");
  expect_close(g.boxes, r.at("g_boxes"), "boxes");
  expect_close(g.masks, r.at("g_masks"), "masks");
  expect_close(g.presence, r.at("g_presence"), "presence");
  expect_close(g.memory, r.at("g_memory"), "memory");
  expect_close(g.queries, r.at("g_queries"), "queries");
  auto s = t.sam_head(r.at("emb"), r.at("s0"), r.at("s1"), r.at("points"), r.at("labels"));
  expect_close(s.masks, r.at("sam_masks"), "sam masks");
  expect_close(s.iou, r.at("sam_iou"), "sam iou");
  expect_close(s.obj, r.at("sam_obj"), "sam obj");
  EXPECT_GE(s.iou.min().item<float>(), 0.f);
  EXPECT_LE(s.iou.max().item<float>(), 1.f);
  EXPECT_GE(g.boxes.min().item<float>(), 0.f);
  EXPECT_LE(g.boxes.max().item<float>(), 1.f);
}

TEST(BundleLoad, BatchOfThreeMatchesPerSample) {
  REQUIRE_FIXTURES();
  BundleLoadOptions opts;
  opts.modules = kAll;
  auto t = TeacherBundle::load(fx + "/bundle", opts);
  torch::NoGradGuard ng;
  torch::manual_seed(0);
  auto px = torch::rand({3, 3, 224, 224}) * 2 - 1;
  auto feats = t.trunk(px);
  ASSERT_EQ(feats.sizes(), (at::IntArrayRef{3, 128, 16, 16}));
  auto [f0, f1, f2] = t.detector_neck(feats);
  auto [emb, s0, s1] = t.interactive_neck(feats);
  auto ids = torch::tensor({0, 5, 11}, torch::kLong);
  auto [text, pad] = t.concepts(ids);
  ASSERT_EQ(pad.sizes(), (at::IntArrayRef{3, 8}));
  auto g = t.grounding(f0, f1, f2, text, pad);
  EXPECT_EQ(g.masks.sizes(), (at::IntArrayRef{3, 16, 64, 64}));
  EXPECT_EQ(g.memory.sizes(), (at::IntArrayRef{256, 3, 64}));
  auto pts = torch::tensor({50.f, 60.f, 100.f, 120.f}).reshape({1, 2, 2}).repeat({3, 1, 1});
  auto lab = torch::tensor({1, -1}, torch::kLong).reshape({1, 2}).repeat({3, 1});
  auto s = t.sam_head(emb, s0, s1, pts, lab);
  EXPECT_EQ(s.masks.sizes(), (at::IntArrayRef{3, 3, 64, 64}));
  // Sample 1 of the batch equals a B=1 run on that sample.
  auto i = torch::indexing::Slice(1, 2);
  auto g1 = t.grounding(f0.index({i}), f1.index({i}), f2.index({i}), text.index({i}), pad.index({i}));
  EXPECT_TRUE(at::allclose(g1.masks, g.masks.index({i}), 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(g1.memory, g.memory.index({torch::indexing::Slice(), i}), 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(t.trunk(px.index({i})), feats.index({i}), 1e-4, 1e-4));
}

TEST(BundleLoad, GradientsFlowThroughFrozenGrounding) {
  REQUIRE_FIXTURES();
  BundleLoadOptions opts;
  opts.modules = {"grounding", "concept_bank"};
  auto t = TeacherBundle::load(fx + "/bundle", opts);
  torch::manual_seed(1);
  auto fpn0 = torch::randn({2, 64, 64, 64}, torch::requires_grad());
  auto fpn1 = torch::randn({2, 64, 32, 32}, torch::requires_grad());
  auto fpn2 = torch::randn({2, 64, 16, 16}, torch::requires_grad());
  auto [text, pad] = t.concepts(torch::tensor({1, 4}, torch::kLong));
  auto g = t.grounding(fpn0, fpn1, fpn2, text, pad);
  auto loss = g.logits.sum() + g.masks.mean() + g.memory.pow(2).mean() + g.presence.sum();
  loss.backward();
  for (auto* x : {&fpn0, &fpn1, &fpn2}) {
    ASSERT_TRUE(x->grad().defined());
    EXPECT_GT(x->grad().abs().sum().item<double>(), 0.0);
  }
}

// to() re-loads each TorchScript module from its file onto the new device (bundle.h): a move away
// and back drops in-memory changes and makes earlier parameter handles stale; to() onto the device
// the modules are on keeps them. On CPU the move goes through the meta device (no data).
TEST(BundleLoad, ToDeviceRoundTrip) {
  REQUIRE_FIXTURES();
  BundleLoadOptions opts;
  opts.modules = {"trunk", "detector_neck"};
  auto t = TeacherBundle::load(fx + "/bundle", opts);
  auto r = load_reference(fx + "/reference.pt");
  torch::NoGradGuard ng;
  auto w = t.named_parameters("trunk").at(0).second;
  t.to(at::Device(at::kCPU));  // already there: nothing re-loaded
  EXPECT_TRUE(t.named_parameters("trunk").at(0).second.is_same(w)) << "to() the same device re-loaded the trunk";
  w.zero_();  // an in-memory change the trunk's output shows
  EXPECT_GT((t.trunk(r.at("pixels")) - r.at("feats")).abs().max().item<double>(), 1e-3);

  t.to(at::Device(at::kMeta));  // (the traced trunk calls aten::equal, which meta lacks: no forward here)
  for (const char* key : {"trunk", "detector_neck"})
    for (const auto& kv : t.named_parameters(key)) EXPECT_EQ(kv.second.device().type(), at::kMeta) << key << " " << kv.first;

  t.to(at::Device(at::kCPU));
  const auto back = t.named_parameters("trunk").at(0).second;
  EXPECT_EQ(back.device().type(), at::kCPU);
  EXPECT_FALSE(back.is_same(w)) << "the trunk was not re-loaded";
  EXPECT_FALSE(back.requires_grad());
  expect_close(t.trunk(r.at("pixels")), r.at("feats"), "feats after the round trip");  // the file's weights again
  auto [f0, f1, f2] = t.detector_neck(r.at("feats"));
  expect_close(f0, r.at("fpn0"), "fpn0 after the round trip");
  expect_close(f2, r.at("fpn2"), "fpn2 after the round trip");
  EXPECT_EQ(w.abs().max().item<double>(), 0.0) << "the stale handle is the old, changed tensor";
}

// On CUDA: the teacher's modules and a student bundle's C++ trunk move there and back, outputs intact.
TEST(BundleLoad, ToCudaRoundTrip) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CPU <-> CUDA round trip is not run";
  REQUIRE_FIXTURES();
  BundleLoadOptions opts;
  opts.modules = {"trunk", "detector_neck"};
  auto t = TeacherBundle::load(fx + "/bundle", opts);
  auto r = load_reference(fx + "/reference.pt");
  torch::NoGradGuard ng;
  t.to(at::Device(at::kCUDA));
  EXPECT_TRUE(t.named_parameters("trunk").at(0).second.is_cuda());
  const auto feats = t.trunk(r.at("pixels").cuda());
  ASSERT_TRUE(feats.is_cuda());
  EXPECT_TRUE(at::allclose(feats.cpu(), r.at("feats"), 1e-4, 1e-4));
  auto [f0, f1, f2] = t.detector_neck(r.at("feats").cuda());
  ASSERT_TRUE(f0.is_cuda());
  EXPECT_TRUE(at::allclose(f0.cpu(), r.at("fpn0"), 1e-4, 1e-4));
  t.to(at::Device(at::kCPU));
  EXPECT_FALSE(t.named_parameters("trunk").at(0).second.is_cuda());
  expect_close(t.trunk(r.at("pixels")), r.at("feats"), "feats back on CPU");

  // A student bundle: its trunk is the C++ ViT, moved with Module::to().
  const std::string dir = tmp_dir("student_cuda");
  const auto o = make_student_bundle(fx, dir, t.info()).first;
  auto b = TeacherBundle::load(o.output);
  const auto want = b.trunk(r.at("pixels"));
  b.to(at::Device(at::kCUDA));
  EXPECT_TRUE(b.named_parameters("trunk").at(0).second.is_cuda());
  EXPECT_TRUE(at::allclose(b.trunk(r.at("pixels").cuda()).cpu(), want, 1e-4, 1e-4));
  b.to(at::Device(at::kCPU));
  EXPECT_TRUE(at::allclose(b.trunk(r.at("pixels")), want, 1e-5, 1e-5));
  fs::remove_all(dir);
}

TEST(BundleBroken, GridDisagreesWithTrunk) {
  REQUIRE_FIXTURES();
  expect_error([&] { TeacherBundle::load(fx + "/broken_grid"); },
               {"trunk.pt", "'feats'", "[1, 128, 16, 16]", "[1, 128, 8, 8]"});
  BundleLoadOptions no_check;
  no_check.validate_shapes = false;
  EXPECT_NO_THROW(TeacherBundle::load(fx + "/broken_grid", no_check));
}

TEST(BundleBroken, MissingModuleFile) {
  REQUIRE_FIXTURES();
  expect_error([&] { TeacherBundle::load(fx + "/broken_missing"); },
               {"missing module file", fx + "/broken_missing/trunk.pt"});
}

TEST(BundleBroken, HashMismatch) {
  REQUIRE_FIXTURES();
  const auto info = instinct::teacher::read_bundle_info(fx + "/broken_hash");
  const std::string actual = instinct::io::sha256_file(fx + "/broken_hash/trunk.pt");
  expect_error([&] { TeacherBundle::load(fx + "/broken_hash"); },
               {"sha256 mismatch", "trunk.pt", info.modules.at("trunk").second, actual});
  BundleLoadOptions no_hash;
  no_hash.verify_hashes = false;
  EXPECT_NO_THROW(TeacherBundle::load(fx + "/broken_hash", no_hash));
}

TEST(BundleBroken, NotTorchScript) {
  REQUIRE_FIXTURES();
  expect_error([&] { TeacherBundle::load(fx + "/broken_script"); }, {"cannot load TorchScript file", "trunk.pt"});
}

TEST(BundleLoad, ForwardErrorNamesFileInOneLine) {
  REQUIRE_FIXTURES();
  auto t = TeacherBundle::load(fx + "/bundle");
  torch::NoGradGuard ng;
  expect_error([&] { t.trunk(torch::zeros({1, 3, 100, 100})); }, {"trunk.pt", "forward failed"});
}

// A student bundle (instinct-merge bundle): the trunk entry is a student trunk file run by the C++
// ViT; its output equals the student's own forward, the other modules are the teacher's files.
TEST(StudentBundle, CppTrunkRunsTheStudentAndOtherModulesAreCopied) {
  REQUIRE_FIXTURES();
  const std::string dir = tmp_dir("student");
  const auto info = instinct::teacher::read_bundle_info(fx + "/bundle");
  auto made = make_student_bundle(fx, dir, info);
  const auto& o = made.first;
  auto& student = made.second;
  BundleLoadOptions lo;
  lo.modules = {"trunk", "detector_neck"};
  auto b = TeacherBundle::load(o.output, lo);
  auto x = torch::randn({2, 3, info.image_size, info.image_size});
  torch::NoGradGuard ng;
  auto want = student->forward(torch::nn::functional::interpolate(
      x, torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{64, 64}).mode(torch::kBilinear).align_corners(false)));
  auto got = b.trunk(x);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5));
  EXPECT_EQ(read_text(o.output + "/detector_neck.pt"), read_text(fx + "/bundle/detector_neck.pt"));
  EXPECT_FALSE(fs::exists(o.output + "/trunk_state_dict.pt"));
  // The output exists now: a second merge refuses to overwrite it; a bad format value is named.
  expect_error([&] { instinct::merge::merge_bundle(o); }, {"out", "already exists"});
  std::string j = read_text(o.output + "/bundle.json");
  j.replace(j.find("\"instinct-trunk\""), 16, "\"onnx\"");
  std::ofstream(o.output + "/bundle.json") << j;
  expect_error([&] { instinct::teacher::read_bundle_info(o.output); }, {"modules.trunk.format", "instinct-trunk", "onnx"});
  fs::remove_all(dir);
}
