// io layer: atomic writes, torch.save-compatible archives, safetensors; Python fixtures from
// tests/python/fixtures_io.py, Python-side checks of our output in tests/python/check_io_*.py.
#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utime.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "instinct/common/error.h"
#include "instinct/io/archive.h"
#include "instinct/io/atomic_file.h"
#include "instinct/io/safetensors.h"
#include "instinct/io/torch_zip.h"

namespace fs = std::filesystem;
using namespace instinct;
using io::TensorList;

namespace {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "instinct_io_XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
    EXPECT_FALSE(path_.empty());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

std::string slurp(const std::string& path) { return io::read_file(path); }

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), bytes.size());
}

// Runs fn, expects instinct::Error whose one-line message contains every needle.
template <typename Fn>
std::string expect_error(Fn fn, std::initializer_list<std::string> needles) {
  try {
    fn();
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line message: " << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected instinct::Error, got other exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected instinct::Error, nothing thrown";
  return "";
}

bool bytes_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

std::vector<std::string> keys_of(const c10::IValue& d) {
  std::vector<std::string> k;
  for (const auto& kv : d.toGenericDict()) k.push_back(kv.key().toStringRef());
  return k;
}

at::ScalarType dtype_from_name(const std::string& n) {
  static const std::map<std::string, at::ScalarType> m = {
      {"float32", at::kFloat}, {"float16", at::kHalf},  {"bfloat16", at::kBFloat16},
      {"float64", at::kDouble}, {"int64", at::kLong},   {"int32", at::kInt},
      {"int16", at::kShort},   {"int8", at::kChar},     {"uint8", at::kByte},
      {"bool", at::kBool},     {"complex64", at::kComplexFloat}};
  auto it = m.find(n);
  if (it == m.end()) throw std::runtime_error("unknown dtype in ref.json: " + n);
  return it->second;
}

// A representative nested object covering every dtype and plain value type.
TensorList all_dtype_tensors() {
  return {
      {"f32", torch::arange(12, torch::kFloat).reshape({3, 4}) * 0.5 - 1},
      {"f16", (torch::arange(6, torch::kFloat) * 0.25).to(torch::kHalf).reshape({2, 3})},
      {"bf16", (torch::arange(6, torch::kFloat) * 0.5 - 1).to(torch::kBFloat16)},
      {"f64", torch::arange(5, torch::kDouble) / 3},
      {"i64", torch::tensor({-(int64_t(1) << 62), int64_t(1) << 62, int64_t(7)}, torch::kLong)},
      {"i32", torch::arange(-3, 3, torch::kInt)},
      {"i16", torch::tensor({-32768, 32767, 5}, torch::kShort)},
      {"i8", torch::tensor({-128, 127, 0}, torch::kChar)},
      {"u8", torch::arange(250, 256, torch::kByte)},
      {"bool", torch::arange(5) % 2 == 0},
      {"c64", torch::complex(torch::arange(4, torch::kFloat), torch::arange(4, torch::kFloat) * -0.5)},
      {"noncontig", torch::arange(12, torch::kFloat).reshape({3, 4}).t()},
      {"slice", torch::arange(1000, torch::kFloat).narrow(0, 10, 5)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
  };
}

// The object check_io_torch_load.py recomputes in Python (keep the two in sync).
c10::IValue python_interop_object() {
  c10::impl::GenericDict tensors(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [k, t] : all_dtype_tensors()) tensors.insert(k, t);
  auto base = torch::arange(8, torch::kFloat);
  tensors.insert("shared_a", base);
  tensors.insert("shared_b", base.view({2, 4}));
  tensors.insert("grad", torch::ones({3}).requires_grad_(true));

  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("zz_first", int64_t(1));
  d.insert("tensors", tensors);
  d.insert("name", std::string("vit_base"));
  d.insert("step", int64_t(6000));
  d.insert("big", int64_t(1) << 40);
  d.insert("lr", 1e-4);
  d.insert("ok", true);
  d.insert("nothing", c10::IValue());
  d.insert("grid", c10::List<int64_t>({63, 63}));
  d.insert("scales", c10::List<double>({0.5, 2.0}));
  d.insert("flags", c10::List<bool>({true, false}));
  d.insert("tensor_list", c10::List<at::Tensor>({torch::ones({2}), torch::zeros({1}, torch::kLong)}));
  d.insert("pair", c10::ivalue::Tuple::create({std::string("a"), int64_t(1)}));
  c10::impl::GenericList mixed(c10::AnyType::get());
  mixed.push_back(int64_t(1));
  mixed.push_back(std::string("two"));
  mixed.push_back(c10::List<double>({3.0}));
  d.insert("mixed", mixed);
  d.insert("empty_dict", c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get()));
  d.insert("a_last", std::string("end"));
  return d;
}

TensorList instinct_like_trunk() {
  return {{"model.backbone.model.cls_token", torch::arange(8, torch::kFloat).reshape({1, 1, 8}) / 8},
          {"model.backbone.model.pos_embed", torch::arange(40, torch::kFloat).reshape({1, 5, 8}) - 20},
          {"model.backbone.model.blocks.0.attn.qkv.weight", torch::arange(192, torch::kFloat).reshape({24, 8}) * 0.01},
          {"model.head.1.running_mean", torch::arange(16, torch::kFloat) * 0.25},
          {"model.head.1.num_batches_tracked", torch::tensor(int64_t(42))}};
}

void expect_same_value(const c10::IValue& got, const c10::IValue& want, const std::string& at) {
  if (want.isTensor()) {
    ASSERT_TRUE(got.isTensor()) << at;
    EXPECT_TRUE(bytes_equal(got.toTensor(), want.toTensor().detach())) << at;
    EXPECT_TRUE(got.toTensor().is_contiguous()) << at;
  } else if (want.isGenericDict()) {
    ASSERT_TRUE(got.isGenericDict()) << at;
    ASSERT_EQ(keys_of(got), keys_of(want)) << at;
    for (const auto& kv : want.toGenericDict())
      expect_same_value(got.toGenericDict().at(kv.key()), kv.value(), at + "." + kv.key().toStringRef());
  } else if (want.isList()) {
    ASSERT_TRUE(got.isList()) << at;
    auto g = got.toListRef();
    auto w = want.toListRef();
    ASSERT_EQ(g.size(), w.size()) << at;
    for (size_t i = 0; i < w.size(); ++i) expect_same_value(g[i], w[i], at + "[" + std::to_string(i) + "]");
  } else if (want.isTuple()) {
    ASSERT_TRUE(got.isTuple()) << at;
    auto& g = got.toTupleRef().elements();
    auto& w = want.toTupleRef().elements();
    ASSERT_EQ(g.size(), w.size()) << at;
    for (size_t i = 0; i < w.size(); ++i) expect_same_value(g[i], w[i], at + "[" + std::to_string(i) + "]");
  } else {
    EXPECT_EQ(got.tagKind(), want.tagKind()) << at;
    EXPECT_TRUE(got == want) << at << ": got " << got << " want " << want;
  }
}

// INSTINCT_FIXTURES/io/ (written by tests/python/fixtures_io.py); empty + test failure if absent.
std::string fixtures_dir() {
  const char* env = std::getenv("INSTINCT_FIXTURES");
  if (!env) {
    ADD_FAILURE() << "INSTINCT_FIXTURES is not set; run through ctest (fixtures.python generates them)";
    return "";
  }
  std::string dir = std::string(env) + "/io/";
  if (!fs::exists(dir + "ref.json")) {
    ADD_FAILURE() << dir << "ref.json missing; run tests/python/make_fixtures.py";
    return "";
  }
  return dir;
}

nlohmann::json fixture_ref(const std::string& dir, const std::string& file) {
  auto j = nlohmann::json::parse(slurp(dir + "ref.json"));
  return j.at(file);
}

c10::IValue at_path(c10::IValue v, const nlohmann::json& path) {
  for (const auto& k : path) v = io::dict_get(v, k.get<std::string>(), "fixture");
  return v;
}

// Compares a loaded object with the entries fixtures_io.py recorded for it.
void check_against_ref(const std::string& dir, const std::string& file, const c10::IValue& root) {
  auto entries = fixture_ref(dir, file);
  ASSERT_FALSE(entries.empty());
  for (const auto& e : entries) {
    const std::string where = file + ":" + e["path"].dump();
    c10::IValue v = at_path(root, e["path"]);
    const std::string kind = e["kind"];
    if (kind == "dict") {
      ASSERT_TRUE(v.isGenericDict()) << where;
      EXPECT_EQ(keys_of(v), e["keys"].get<std::vector<std::string>>()) << where;
    } else if (kind == "tensor") {
      ASSERT_TRUE(v.isTensor()) << where;
      auto t = v.toTensor();
      EXPECT_EQ(t.scalar_type(), dtype_from_name(e["dtype"])) << where;
      EXPECT_EQ(t.sizes().vec(), e["shape"].get<std::vector<int64_t>>()) << where;
      EXPECT_EQ(t.device(), at::Device(at::kCPU)) << where;
      std::string raw = slurp(dir + e["bin"].get<std::string>());
      auto c = t.contiguous();
      ASSERT_EQ(raw.size(), c.nbytes()) << where;
      EXPECT_EQ(std::memcmp(raw.data(), c.data_ptr(), raw.size()), 0) << where << ": values differ";
    } else if (kind == "int") {
      ASSERT_TRUE(v.isInt()) << where;
      EXPECT_EQ(v.toInt(), e["value"].get<int64_t>()) << where;
    } else if (kind == "float") {
      ASSERT_TRUE(v.isDouble()) << where;
      EXPECT_EQ(v.toDouble(), e["value"].get<double>()) << where;
    } else if (kind == "bool") {
      ASSERT_TRUE(v.isBool()) << where;
      EXPECT_EQ(v.toBool(), e["value"].get<bool>()) << where;
    } else if (kind == "str") {
      ASSERT_TRUE(v.isString()) << where;
      EXPECT_EQ(v.toStringRef(), e["value"].get<std::string>()) << where;
    } else if (kind == "none") {
      EXPECT_TRUE(v.isNone()) << where;
    } else if (kind == "int_list") {
      ASSERT_TRUE(v.isList()) << where;
      std::vector<int64_t> got;
      for (const auto& x : v.toListRef()) got.push_back(x.toInt());
      EXPECT_EQ(got, e["value"].get<std::vector<int64_t>>()) << where;
    } else {
      FAIL() << where << ": unknown kind " << kind;
    }
  }
}

// Builds a safetensors file from a raw header string and data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data, int64_t len_override = -1) {
  uint64_t n = len_override >= 0 ? uint64_t(len_override) : header.size();
  std::string out(8, '\0');
  for (int b = 0; b < 8; ++b) out[b] = char((n >> (8 * b)) & 0xff);
  return out + header + data;
}

}  // namespace

// ---------------------------------------------------------------- AtomicFile

TEST(IoAtomicFile, NoFileLeftWhenNotCommitted) {
  TempDir dir;
  const auto target = dir / "out.bin";
  spit(target, "previous");
  std::string temp;
  {
    io::AtomicFile f(target);
    temp = f.temp_path();
    EXPECT_EQ(fs::path(temp).parent_path(), fs::path(target).parent_path());
    spit(temp, "half-written");
    EXPECT_TRUE(fs::exists(temp));
  }  // destroyed without commit (as if an exception unwound)
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_EQ(slurp(target), "previous");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator{}), 1);

  {
    io::AtomicFile f(dir / "new.bin");
    spit(f.temp_path(), "x");
  }
  EXPECT_FALSE(fs::exists(dir / "new.bin"));
}

TEST(IoAtomicFile, CommitReplacesAtomically) {
  TempDir dir;
  const auto target = dir / "cfg.json";
  spit(target, "old content that is longer than the new one");
  // A reader holding the old file keeps seeing it: rename swaps the directory entry (new inode).
  std::ifstream old_reader(target, std::ios::binary);
  io::write_file_atomic(target, std::string("new\0bytes", 9));
  EXPECT_EQ(slurp(target), std::string("new\0bytes", 9));
  std::string old_seen((std::istreambuf_iterator<char>(old_reader)), std::istreambuf_iterator<char>());
  EXPECT_EQ(old_seen, "old content that is longer than the new one");
  for (const auto& e : fs::directory_iterator(dir.str()))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

// A restart removes `*.tmp.<pid>` files whose writer is gone. A writer killed by SIGKILL whose
// parent never reaps it stays a zombie (kill(pid, 0) still succeeds), and a pid may be reused by an
// unrelated process: neither is writing, so neither may keep its temporary alive forever.
TEST(IoAtomicFile, TempWriterAliveSeesZombiesAndReusedPids) {
  TempDir dir;
  {
    io::AtomicFile own(dir / "own.bin");
    spit(own.temp_path(), "x");
    EXPECT_TRUE(io::temp_writer_alive(own.temp_path()));
  }
  EXPECT_FALSE(io::temp_writer_alive(dir / "absent.bin.tmp.1"));
  spit(dir / "odd.bin.tmp.x1", "x");
  EXPECT_FALSE(io::temp_writer_alive(dir / "odd.bin.tmp.x1"));

  const pid_t live = ::fork();
  ASSERT_GE(live, 0);
  if (live == 0) { for (;;) ::pause(); }
  const std::string by_live = dir / ("live.bin.tmp." + std::to_string(live));
  spit(by_live, "x");  // written after the process started: its writer may still be at work
  EXPECT_TRUE(io::temp_writer_alive(by_live));
  struct utimbuf hour_ago { ::time(nullptr) - 3600, ::time(nullptr) - 3600 };
  ASSERT_EQ(::utime(by_live.c_str(), &hour_ago), 0);  // older than the process: a reused pid
  EXPECT_FALSE(io::temp_writer_alive(by_live));
  ::kill(live, SIGKILL);
  ::waitpid(live, nullptr, 0);

  const pid_t zombie = ::fork();
  ASSERT_GE(zombie, 0);
  if (zombie == 0) ::_exit(0);
  const std::string by_zombie = dir / ("zombie.bin.tmp." + std::to_string(zombie));
  spit(by_zombie, "x");
  for (int i = 0; i < 500; ++i) {  // until the child has exited (not reaped: a zombie)
    siginfo_t info{};
    if (::waitid(P_PID, zombie, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == zombie) break;
    ::usleep(10000);
  }
  EXPECT_EQ(::kill(zombie, 0), 0) << "the unreaped child should still have a pid";
  EXPECT_FALSE(io::temp_writer_alive(by_zombie));
  ::waitpid(zombie, nullptr, 0);
  EXPECT_FALSE(io::temp_writer_alive(by_zombie));
}

TEST(IoAtomicFile, Errors) {
  TempDir dir;
  expect_error([&] { io::write_file_atomic(dir / "no_such_dir/x.bin", "x"); }, {"no_such_dir", "does not exist"});
  expect_error([&] { io::AtomicFile f(dir / "never.bin"); f.commit(); }, {"never.bin", "not written"});
  expect_error([&] { io::read_file(dir / "missing.txt"); }, {"missing.txt", "No such file"});
}

// ---------------------------------------------------------------- torch archives

TEST(IoArchive, RoundTripNestedObject) {
  TempDir dir;
  const auto obj = python_interop_object();
  io::save_object(dir / "obj.pt", obj);
  const auto back = io::load_object(dir / "obj.pt");
  expect_same_value(back, obj, "<root>");
  // Views were written without their base storage and nothing shares storage after loading.
  auto t = io::dict_get(back, "tensors", "t");
  EXPECT_EQ(io::dict_get(t, "slice", "t").toTensor().storage().nbytes(), 5 * sizeof(float));
  EXPECT_NE(io::dict_get(t, "shared_a", "t").toTensor().data_ptr(), io::dict_get(t, "shared_b", "t").toTensor().data_ptr());
  EXPECT_FALSE(io::dict_get(t, "grad", "t").toTensor().requires_grad());

  c10::impl::GenericDict small(c10::StringType::get(), c10::AnyType::get());
  small.insert("slice", torch::arange(100000, torch::kFloat).narrow(0, 10, 5));
  io::save_object(dir / "slice.pt", small);
  EXPECT_LT(fs::file_size(dir / "slice.pt"), 4000u) << "a 5-element view must not drag its 100000-element base";
  EXPECT_TRUE(torch::equal(io::dict_get(io::load_object(dir / "slice.pt"), "slice", "s").toTensor(),
                           torch::arange(10, 15, torch::kFloat)));
}

TEST(IoArchive, StateDictOrderAndHelpers) {
  TempDir dir;
  TensorList sd;
  for (const char* k : {"z.weight", "a.bias", "m.running_mean", "b.0.w", "y"}) sd.emplace_back(k, torch::randn({2, 3}));
  c10::impl::GenericDict ckpt(c10::StringType::get(), c10::AnyType::get());
  ckpt.insert("trunk", io::tensor_dict(sd));
  ckpt.insert("backbone", std::string("vit_base"));
  ckpt.insert("model_name", std::string("base"));
  io::save_object(dir / "ckpt.pt", ckpt);
  const auto back = io::load_object(dir / "ckpt.pt");
  EXPECT_EQ(keys_of(back), (std::vector<std::string>{"trunk", "backbone", "model_name"}));
  auto list = io::to_tensor_list(io::dict_get(back, "trunk", "ckpt.pt"), "ckpt.pt: trunk");
  ASSERT_EQ(list.size(), sd.size());
  for (size_t i = 0; i < sd.size(); ++i) {
    EXPECT_EQ(list[i].first, sd[i].first);
    EXPECT_TRUE(torch::equal(list[i].second, sd[i].second));
  }
  expect_error([&] { io::to_tensor_list(back, "ckpt.pt"); }, {"ckpt.pt", "'trunk'", "is a dict", "expected a tensor"});
  auto mixed = io::tensor_dict(sd);
  mixed.toGenericDict().insert("name", std::string("x"));
  expect_error([&] { io::to_tensor_list(mixed, "ckpt.pt: trunk"); }, {"ckpt.pt: trunk", "'name'", "is a str", "expected a tensor"});
  expect_error([&] { io::dict_get(back, "model", "ckpt.pt"); }, {"ckpt.pt", "missing key 'model'", "trunk, backbone, model_name"});
  expect_error([&] { io::tensor_dict({{"a", torch::ones(1)}, {"a", torch::ones(1)}}); }, {"duplicate", "'a'"});
}

TEST(IoArchive, RejectsUnsupportedValuesOnSave) {
  TempDir dir;
  c10::Dict<int64_t, at::Tensor> int_keys;
  int_keys.insert(3, torch::ones(1));
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("inner", int_keys);
  expect_error([&] { io::save_object(dir / "bad.pt", d); }, {"bad.pt", "<root>.inner", "key of type int", "expected string keys"});
  c10::impl::GenericDict d2(c10::StringType::get(), c10::AnyType::get());
  d2.insert("dev", c10::IValue(at::Device(at::kCPU)));
  expect_error([&] { io::save_object(dir / "bad.pt", d2); }, {"bad.pt", "<root>.dev", "Device"});
  EXPECT_FALSE(fs::exists(dir / "bad.pt"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator{}), 0);
}

TEST(IoArchive, LoadErrors) {
  TempDir dir;
  expect_error([&] { io::load_object(dir / "missing.pt"); }, {"missing.pt", "No such file"});
  expect_error([&] { io::load_object(dir.str()); }, {"is a directory"});
  spit(dir / "empty.pt", "");
  expect_error([&] { io::load_object(dir / "empty.pt"); }, {"empty.pt", "empty"});
  spit(dir / "text.pt", "not a checkpoint");
  expect_error([&] { io::load_object(dir / "text.pt"); }, {"text.pt", "not a torch.save file"});

  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  d.insert("w", torch::randn({64, 64}));
  io::save_object(dir / "good.pt", d);
  const std::string bytes = slurp(dir / "good.pt");
  for (size_t keep : {bytes.size() / 2, bytes.size() - 30, size_t(10)}) {
    spit(dir / "trunc.pt", bytes.substr(0, keep));
    expect_error([&] { io::load_object(dir / "trunc.pt"); }, {"trunc.pt", "truncated or corrupt"});
  }
  // Same archive with the pickle's record bytes damaged (zip directory intact).
  std::string damaged = bytes;
  auto pos = damaged.find("data.pkl");
  ASSERT_NE(pos, std::string::npos);
  auto proto = damaged.find("\x80\x02", pos);
  ASSERT_NE(proto, std::string::npos);
  damaged[proto + 2] = 'Z';
  spit(dir / "damaged.pt", damaged);
  expect_error([&] { io::load_object(dir / "damaged.pt"); }, {"damaged.pt", "corrupt"});

  // Top-level object must be a dict.
  c10::impl::GenericList l(c10::AnyType::get());
  l.push_back(int64_t(1));
  io::save_object(dir / "list.pt", l);
  expect_error([&] { io::load_object(dir / "list.pt"); }, {"list.pt", "top-level object", "expected a dict"});
}

// ---------------------------------------------------------------- safetensors

TEST(IoSafetensors, RoundTrip) {
  TempDir dir;
  TensorList tensors;
  for (auto& [k, t] : all_dtype_tensors())
    if (t.scalar_type() != at::kComplexFloat) tensors.emplace_back(k, t);
  tensors.emplace_back("c64_too", torch::complex(torch::ones(2), torch::zeros(2)));
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "6000"}};
  io::save_safetensors(dir / "w.safetensors", tensors, meta);

  std::map<std::string, std::string> meta_back;
  auto back = io::load_safetensors(dir / "w.safetensors", &meta_back);
  EXPECT_EQ(meta_back, meta);
  ASSERT_EQ(back.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(back[i].first, tensors[i].first) << "order";
    EXPECT_TRUE(bytes_equal(back[i].second, tensors[i].second)) << tensors[i].first;
  }
  const std::string bytes = slurp(dir / "w.safetensors");
  uint64_t n = 0;
  for (int b = 0; b < 8; ++b) n |= uint64_t(uint8_t(bytes[b])) << (8 * b);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.compare(8, 15, "{\"__metadata__\""), 0);
  expect_error([&] { io::save_safetensors(dir / "x.safetensors", {{"a", torch::ones(1)}, {"a", torch::ones(1)}}); }, {"duplicate", "'a'"});
  expect_error([&] { io::save_safetensors(dir / "x.safetensors", {{"q", torch::ones(1, torch::kComplexDouble)}}); }, {"'q'", "ComplexDouble"});
  EXPECT_FALSE(fs::exists(dir / "x.safetensors"));
}

TEST(IoSafetensors, CorruptFilesAreRejected) {
  TempDir dir;
  const std::string f = dir / "bad.safetensors";
  const std::string data(24, '\1');
  auto load = [&] { io::load_safetensors(f); };
  auto hdr = [](const std::string& entry) { return "{\"w\":" + entry + "}"; };

  spit(f, "abc");
  expect_error(load, {"bad.safetensors", "too short"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})"), data, 1000));
  expect_error(load, {"bad.safetensors", "header length 1000", "exceeds"});
  spit(f, safetensors_bytes("{\"w\": {\"dtype\": ", data));
  expect_error(load, {"bad.safetensors", "not valid JSON"});
  spit(f, safetensors_bytes("[1,2]", data));
  expect_error(load, {"bad.safetensors", "expected an object"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,20]})"), data));
  expect_error(load, {"bad.safetensors", "'w'", "span 20 bytes, expected 24"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F32","shape":[2,3],"data_offsets":[8,32]})"), data));
  expect_error(load, {"bad.safetensors", "'w'", "past the data section"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F32","shape":[2,3],"data_offsets":[24,0]})"), data));
  expect_error(load, {"bad.safetensors", "'w'", "begin > end"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F8_E4M3","shape":[24],"data_offsets":[0,24]})"), data));
  expect_error(load, {"bad.safetensors", "'w'", "unsupported dtype 'F8_E4M3'"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]})"), data));
  expect_error(load, {"bad.safetensors", "'w'", "shape entry -2"});
  spit(f, safetensors_bytes(hdr(R"({"dtype":"F32","shape":[2,3]})"), data));
  expect_error(load, {"bad.safetensors", "'w'", "data_offsets"});
  spit(f, safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"I32","shape":[4],"data_offsets":[8,24]}})", data));
  expect_error(load, {"bad.safetensors", "'a' and 'b'", "overlapping"});
  spit(f, safetensors_bytes(R"({"__metadata__":{"n":3}})", ""));
  expect_error(load, {"bad.safetensors", "__metadata__", "'n'", "expected a string"});
  // A file cut inside the data section.
  io::save_safetensors(f, {{"w", torch::ones({100})}});
  std::string bytes = slurp(f);
  spit(f, bytes.substr(0, bytes.size() - 4));
  expect_error(load, {"bad.safetensors", "'w'", "past the data section"});
  expect_error([&] { io::load_safetensors(dir / "nope.safetensors"); }, {"nope.safetensors", "No such file"});
}

// ---------------------------------------------------------------- Python-written fixtures

TEST(IoPythonFixtures, AllDtypesAndPlainValues) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  check_against_ref(dir, "dtypes.pt", io::load_object(dir + "dtypes.pt"));
}

TEST(IoPythonFixtures, InstinctSamLayout) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  const auto obj = io::load_object(dir + "instinct_like.pt");
  check_against_ref(dir, "instinct_like.pt", obj);
  EXPECT_EQ(io::dict_get(obj, "backbone", "f").toStringRef(), "vit_base");
  auto trunk = io::to_tensor_list(io::dict_get(obj, "trunk", "f"), "instinct_like.pt: trunk");
  ASSERT_FALSE(trunk.empty());
  EXPECT_EQ(trunk.front().first, "model.backbone.model.cls_token");
  EXPECT_EQ(trunk.back().first, "model.head.3.bias");
}

TEST(IoPythonFixtures, SharedStorageViewsAndCudaLocation) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  check_against_ref(dir, "views.pt", io::load_object(dir + "views.pt"));
  // Storages tagged 'cuda:0' (saved on a GPU machine) load onto the CPU.
  check_against_ref(dir, "cuda_saved.pt", io::load_object(dir + "cuda_saved.pt"));
}

// Python writes SETITEM for a one-item dict (and a trailing single item after full batches of
// 1000) and APPEND for a one-element list (LibTorch's own unpickler implements neither).
namespace {
// io::load_object of each fixture file equals its Python reference values.
void loads_like_reference(const std::string& dir, std::initializer_list<const char*> files) {
  for (const char* f : files) {
    SCOPED_TRACE(f);
    c10::IValue obj;
    try {
      obj = io::load_object(dir + f);
    } catch (const std::exception& e) {
      FAIL() << e.what();
    }
    check_against_ref(dir, f, obj);
  }
}
}  // namespace

TEST(IoPythonFixtures, SingleItemDictsAndListsLoad) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  loads_like_reference(dir, {"single_item.pt", "nested_single_item.pt", "single_in_single.pt", "single_scalar.pt",
                             "dict1001_py.pt", "dict1001.pt", "lists_py.pt", "lists.pt", "list_in_single.pt"});
  // The timm / SAM3 wrapper layout: {"model": state_dict}.
  const auto obj = io::load_object(dir + "single_item.pt");
  EXPECT_EQ(keys_of(obj), std::vector<std::string>{"model"});
  auto model = io::to_tensor_list(io::dict_get(obj, "model", "single_item.pt"), "single_item.pt: model");
  EXPECT_EQ(model.size(), 26u);
  EXPECT_EQ(model.back().first, "blocks.11.attn.qkv.weight");
  EXPECT_EQ(io::dict_get(io::load_object(dir + "single_scalar.pt"), "n", "f").toInt(), -(int64_t(1) << 35));
  const auto big = io::load_object(dir + "dict1001_py.pt");
  EXPECT_EQ(big.toGenericDict().size(), 1001u);
  EXPECT_EQ(keys_of(big).back(), "k0000");
  const auto lists = io::load_object(dir + "lists_py.pt");
  EXPECT_EQ(io::dict_get(lists, "ints", "f").toListRef().size(), 1001u);
  EXPECT_EQ(io::dict_get(lists, "ints", "f").toListRef().back().toInt(), -(int64_t(1) << 40));
}

// Hand-made pickles in a torch.save zip: what torch.save never writes but a pickle may hold.
TEST(IoArchive, HandMadePickles) {
  TempDir dir;
  auto write_zip = [&](const std::string& name, const std::string& record, const std::string& bytes) {
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, size_t n) -> size_t {
      out.write(static_cast<const char*>(buf), static_cast<std::streamsize>(n));
      return n;
    });
    writer.writeRecord(record, bytes.data(), bytes.size());
    writer.writeEndOfFile();
  };
  auto write_pickle = [&](const std::string& name, const std::string& pkl) { write_zip(name, "data.pkl", pkl); };
  using namespace std::string_literals;
  // {"a": {"a": 2}}: } q0 ( X"a" q1 } q2 h1 K2 s u .  (SETITEM whose key is a memo reference)
  write_pickle("memo_key.pt", "\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01}q\x02h\x01K\x02su."s);
  const auto v = io::load_object(dir / "memo_key.pt");
  EXPECT_EQ(io::dict_get(io::dict_get(v, "a", "f"), "a", "f").toInt(), 2);
  // {"x": [[1], 2]} built with APPENDs only: } X"x" ] ] K1 a a K2 a s .
  write_pickle("appends.pt", "\x80\x02}X\x01\x00\x00\x00x]]K\x01" "aaK\x02" "as."s);
  const auto x = io::dict_get(io::load_object(dir / "appends.pt"), "x", "f");
  ASSERT_TRUE(x.isList());
  const auto l = x.toListRef();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].toListRef().size(), 1u);
  EXPECT_EQ(l[0].toListRef()[0].toInt(), 1);
  EXPECT_EQ(l[1].toInt(), 2);
  // {"s": {0: "a", 7: (1,)}, "d": 2} with "d" set twice (first 1): int keys stay ints, the last value wins
  // but the key keeps its first position, as in Python.
  write_pickle("int_keys.pt", "\x80\x02}(X\x01\x00\x00\x00" "dK\x01X\x01\x00\x00\x00s}(K\x00X\x01\x00\x00\x00" "aK\x07K\x01\x85uX\x01\x00\x00\x00" "dK\x02u."s);
  const auto ik = io::load_object(dir / "int_keys.pt");
  EXPECT_EQ(keys_of(ik), (std::vector<std::string>{"d", "s"}));
  EXPECT_EQ(io::dict_get(ik, "d", "f").toInt(), 2);
  const auto s = io::dict_get(ik, "s", "f").toGenericDict();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s.at(int64_t(0)).toStringRef(), "a");
  EXPECT_EQ(s.at(int64_t(7)).toTupleRef().elements().at(0).toInt(), 1);
  // SETITEMS with no MARK.
  write_pickle("no_mark.pt", "\x80\x02}X\x01\x00\x00\x00" "aK\x01su."s);
  expect_error([&] { io::load_object(dir / "no_mark.pt"); }, {"no_mark.pt", "corrupt", "missing MARK"});
  // An opcode torch.save never writes (PERSID, text form).
  write_pickle("persid.pt", "\x80\x02}P0\n."s);
  expect_error([&] { io::load_object(dir / "persid.pt"); }, {"persid.pt", "corrupt or unsupported", "opcode 0x50"});
  // 2**64 as LONG1 (9 bytes): does not fit in int64.
  write_pickle("huge_int.pt", "\x80\x02}X\x01\x00\x00\x00n\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01s."s);
  expect_error([&] { io::load_object(dir / "huge_int.pt"); }, {"huge_int.pt", "wider than 64 bits"});
  // A callable global is refused where it is named, never called: {"x": os.system("touch <marker>")}.
  const std::string marker = dir / "executed";
  const std::string cmd = "touch " + marker;
  std::string len(4, '\0');
  for (int b = 0; b < 4; ++b) len[b] = char((cmd.size() >> (8 * b)) & 0xff);
  write_pickle("os_system.pt", "\x80\x02}X\x01\x00\x00\x00xcos\nsystem\nX"s + len + cmd + "\x85Rs."s);
  expect_error([&] { io::load_object(dir / "os_system.pt"); }, {"os_system.pt", "'os.system'", "never writes", "nothing was executed"});
  EXPECT_FALSE(fs::exists(marker));
  // A TorchScript archive (no data.pkl, TorchScript records).
  write_zip("script.pt", "constants.pkl", "\x80\x02)."s);
  expect_error([&] { io::load_object(dir / "script.pt"); }, {"script.pt", "TorchScript archive"});
}

TEST(IoPythonFixtures, Safetensors) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  std::map<std::string, std::string> meta;
  auto list = io::load_safetensors(dir + "weights.safetensors", &meta);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}, {"source", "fixtures_io"}}));
  // Loaded in data order (fixtures_io.py wrote the header sorted by name, data in another order).
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  for (auto& [k, t] : list) d.insert(k, t);
  check_against_ref(dir, "weights.safetensors", d);
}

// What LibTorch's own unpickler could not read: raw model.state_dict() OrderedDicts (top level,
// nested, empty), pickle protocol 4 (STACK_GLOBAL, MEMOIZE, FRAME) and nn.Parameter (a tensor).
TEST(IoPythonFixtures, OrderedDictsParametersAndProtocol4Load) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  loads_like_reference(dir, {"ordered_dict.pt", "ordered_dict_p4.pt", "nested_ordered_dict.pt", "empty_ordered_dict.pt",
                             "parameter.pt", "protocol4.pt"});
  // A raw state_dict is the same tensors as the plain-dict copy in instinct_like.pt.
  const auto want = io::to_tensor_list(io::dict_get(io::load_object(dir + "instinct_like.pt"), "trunk", "f"), "want");
  const auto got = io::to_tensor_list(io::load_object(dir + "ordered_dict.pt"), "ordered_dict.pt");
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_TRUE(torch::equal(got[i].second, want[i].second)) << got[i].first;
  }
  const auto w = io::dict_get(io::load_object(dir + "parameter.pt"), "w", "parameter.pt").toTensor();
  EXPECT_FALSE(w.requires_grad());
}

TEST(IoPythonFixtures, UnsupportedFilesAreNamed) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  expect_error([&] { io::load_object(dir + "legacy.pt"); }, {"legacy.pt", "legacy (pre-1.6)"});
  expect_error([&] { io::load_object(dir + "not_torch.pt"); }, {"not_torch.pt", "not a torch.save file"});
  expect_error([&] { io::load_object(dir + "numpy_scalar.pt"); }, {"numpy_scalar.pt", "numpy", "scalar", "save numpy values as Python numbers"});
  expect_error([&] { io::load_object(dir + "top_level_list.pt"); }, {"top_level_list.pt", "top-level object is a list", "expected a dict"});
}

// Tensors that share a storage in the file share it after loading, as with torch.load.
TEST(IoPythonFixtures, ViewsShareOneStorage) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  const auto v = io::load_object(dir + "views.pt");
  const auto base = io::dict_get(v, "base", "views.pt").toTensor();
  for (const char* k : {"rows", "col", "t", "flat"})
    EXPECT_TRUE(io::dict_get(v, k, "views.pt").toTensor().storage().is_alias_of(base.storage())) << k;
}

// ---------------------------------------------------------------- files for Python to read

// Writes the files check_io_*.py load with torch.load(weights_only=True) / a hand-written
// safetensors reader into $INSTINCT_IO_OUT (a temp dir when unset), and re-reads them here.
TEST(IoPythonInterop, WriteFilesForPython) {
  TempDir tmp;
  const char* env = std::getenv("INSTINCT_IO_OUT");
  const std::string out = env ? std::string(env) : tmp.str();
  fs::create_directories(out);

  const auto nested = python_interop_object();
  io::save_object(out + "/cpp_nested.pt", nested);
  expect_same_value(io::load_object(out + "/cpp_nested.pt"), nested, "cpp_nested.pt");
  // Python torch 1.13's weights_only unpickler has no BINFLOAT opcode: a float-free copy lets
  // check_io_torch_load.py prove weights_only=True on 1.13 too.
  auto no_floats = python_interop_object().toGenericDict();
  for (const char* k : {"lr", "scales", "mixed"}) (void)no_floats.erase(k);
  io::save_object(out + "/cpp_nested_no_floats.pt", no_floats);
  expect_same_value(io::load_object(out + "/cpp_nested_no_floats.pt"), no_floats, "cpp_nested_no_floats.pt");

  c10::impl::GenericDict ckpt(c10::StringType::get(), c10::AnyType::get());
  ckpt.insert("trunk", io::tensor_dict(instinct_like_trunk()));
  ckpt.insert("backbone", std::string("vit_base"));
  ckpt.insert("model_name", std::string("base"));
  io::save_object(out + "/cpp_instinct_like.pt", ckpt);
  expect_same_value(io::load_object(out + "/cpp_instinct_like.pt"), ckpt, "cpp_instinct_like.pt");
  {  // the same object with every record and the central directory in zip64 form
    io::ArchiveWriter w(out + "/cpp_instinct_like_zip64.pt", /*zip64_from=*/0);
    auto trunk = io::PyValue::make_dict();
    for (const auto& [k, t] : instinct_like_trunk()) trunk->dict.emplace_back(io::PyValue::str(k), w.add_tensor(t));
    auto root = io::PyValue::make_dict();
    root->dict.emplace_back(io::PyValue::str("trunk"), trunk);
    root->dict.emplace_back(io::PyValue::str("backbone"), io::PyValue::str("vit_base"));
    root->dict.emplace_back(io::PyValue::str("model_name"), io::PyValue::str("base"));
    w.finish(root);
  }
  expect_same_value(io::load_object(out + "/cpp_instinct_like_zip64.pt"), ckpt, "cpp_instinct_like_zip64.pt");

  TensorList st;
  for (auto& [k, t] : all_dtype_tensors())
    if (t.scalar_type() != at::kComplexFloat) st.emplace_back(k, t);
  io::save_safetensors(out + "/cpp_weights.safetensors", st, {{"format", "pt"}, {"writer", "instinct"}});
  auto back = io::load_safetensors(out + "/cpp_weights.safetensors");
  ASSERT_EQ(back.size(), st.size());
  for (size_t i = 0; i < st.size(); ++i) EXPECT_TRUE(bytes_equal(back[i].second, st[i].second)) << st[i].first;
}

// ---- lazy reader / streaming writer (instinct/io/torch_zip.h) ----

namespace {
// A LazyArchive tree as an IValue, so the same reference checks apply.
c10::IValue to_ivalue(const io::LazyArchive& a, const io::PyPtr& v) {
  using K = io::PyValue::Kind;
  switch (v->kind) {
    case K::Tensor: return a.load(v->tensor);
    case K::Dict: {
      c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
      for (const auto& [k, x] : v->dict) d.insert(k->s, to_ivalue(a, x));
      return d;
    }
    case K::List: {
      c10::impl::GenericList l(c10::AnyType::get());
      for (const auto& x : v->items) l.push_back(to_ivalue(a, x));
      return l;
    }
    case K::Tuple: {
      std::vector<c10::IValue> e;
      for (const auto& x : v->items) e.push_back(to_ivalue(a, x));
      return c10::ivalue::Tuple::create(std::move(e));
    }
    case K::Str: return v->s;
    case K::Int: return v->i;
    case K::Float: return v->f;
    case K::Bool: return v->b;
    default: return c10::IValue();
  }
}
}  // namespace

TEST(IoLazyArchive, ReadsEveryPythonFixtureLikeTheReference) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  for (const char* f : {"dtypes.pt", "instinct_like.pt", "views.pt", "cuda_saved.pt", "single_item.pt",
                        "nested_single_item.pt", "single_in_single.pt", "single_scalar.pt", "dict1001_py.pt",
                        "dict1001.pt", "lists_py.pt", "lists.pt", "list_in_single.pt"}) {
    SCOPED_TRACE(f);
    io::LazyArchive a(dir + f);
    check_against_ref(dir, f, to_ivalue(a, a.root()));
  }
}

TEST(IoLazyArchive, ReadsRawStateDictOrderedDictsInAnyProtocol) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  io::LazyArchive ref(dir + "instinct_like.pt");
  const auto want = io::load_tensor_dict(ref, ref.root()->get("trunk"), "instinct_like.pt");
  ASSERT_FALSE(want.empty());
  auto same = [&](const TensorList& got, const std::string& what) {
    ASSERT_EQ(got.size(), want.size()) << what;
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, want[i].first) << what;
      EXPECT_TRUE(torch::equal(got[i].second, want[i].second)) << what << " " << got[i].first;
    }
  };
  for (const char* f : {"ordered_dict.pt", "ordered_dict_p4.pt"}) {
    io::LazyArchive a(dir + f);
    same(io::load_tensor_dict(a, a.root(), f), f);
  }
  io::LazyArchive n(dir + "nested_ordered_dict.pt");
  same(io::load_tensor_dict(n, n.root()->get("trunk"), "nested"), "nested_ordered_dict.pt");
  io::LazyArchive p(dir + "parameter.pt");
  EXPECT_TRUE(p.root()->get("w")->is_tensor());
  EXPECT_TRUE(p.root()->get("w")->tensor.requires_grad);
}

TEST(IoLazyArchive, RejectsWhatIsNotATorchSaveFile) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  expect_error([&] { io::LazyArchive a(dir + "legacy.pt"); }, {"legacy.pt", "legacy (pre-1.6)", "not a zip"});
  expect_error([&] { io::LazyArchive a("/no/such/file.pt"); }, {"/no/such/file.pt", "cannot open"});
  const fs::path d = fs::temp_directory_path() / ("instinct_lazy_" + std::to_string(::getpid()));
  fs::create_directories(d);
  {
    const auto full = slurp(dir + "dtypes.pt");
    std::ofstream(d / "cut.pt", std::ios::binary) << full.substr(0, full.size() / 2);
  }
  expect_error([&] { io::LazyArchive a((d / "cut.pt").string()); }, {"cut.pt", "truncated or corrupt"});
  fs::remove_all(d);
}

// Written by ArchiveWriter (tensors of every dtype, views sharing storage, copies of another
// archive's storages, nested containers), read back through io::load_object and LazyArchive: the
// same values, for plain and for zip64 layouts, byte-identical reruns. (Python reads both layouts:
// check_io_torch_load.py.)
TEST(IoArchiveWriter, RoundTripsIncludingZip64) {
  const auto dir = fixtures_dir();
  ASSERT_FALSE(dir.empty());
  const fs::path d = fs::temp_directory_path() / ("instinct_writer_" + std::to_string(::getpid()));
  fs::create_directories(d);
  io::LazyArchive src(dir + "views.pt");
  auto write = [&](const std::string& name, uint64_t zip64_from) {
    io::ArchiveWriter w((d / name).string(), zip64_from);
    auto root = io::PyValue::make_dict();
    auto add = [&](const std::string& k, io::PyPtr v) { root->dict.emplace_back(io::PyValue::str(k), std::move(v)); };
    torch::manual_seed(0);
    add("f32", w.add_tensor(torch::randn({3, 4})));
    add("bf16", w.add_tensor(torch::randn({5}).to(torch::kBFloat16)));
    add("c64", w.add_tensor(torch::randn({2, 3}, torch::kComplexFloat)));
    add("i64", w.add_tensor(torch::arange(7)));
    add("bool", w.add_tensor(torch::tensor({true, false, true})));
    add("noncontig", w.add_tensor(torch::randn({4, 6}).t()));
    for (const auto& [k, v] : src.root()->dict) add("views." + k->s, w.copy_tensor(src, v->tensor));
    add("nested", [] {
      auto n = io::PyValue::make_dict();
      n->dict.emplace_back(io::PyValue::str("list"), io::PyValue::make_list({io::PyValue::integer(1), io::PyValue::real(2.5)}));
      n->dict.emplace_back(io::PyValue::str("big"), io::PyValue::integer(int64_t(1) << 40));
      n->dict.emplace_back(io::PyValue::str("neg"), io::PyValue::integer(-70000));
      n->dict.emplace_back(io::PyValue::str("name"), io::PyValue::str("vit_base"));
      n->dict.emplace_back(io::PyValue::str("flag"), io::PyValue::boolean(true));
      return n;
    }());
    w.finish(root);
  };
  write("plain.pt", 0xFFFFFFFFu);
  write("plain2.pt", 0xFFFFFFFFu);
  write("zip64.pt", 0);
  EXPECT_EQ(slurp((d / "plain.pt").string()), slurp((d / "plain2.pt").string()));
  const auto want_views = io::load_object(dir + "views.pt");
  for (const char* f : {"plain.pt", "zip64.pt"}) {
    SCOPED_TRACE(f);
    const auto got = io::load_object((d / f).string());
    io::LazyArchive lazy((d / f).string());
    for (const auto& kv : want_views.toGenericDict()) {
      const auto k = "views." + kv.key().toStringRef();
      EXPECT_TRUE(torch::equal(io::dict_get(got, k, f).toTensor(), kv.value().toTensor())) << k;
      EXPECT_TRUE(torch::equal(lazy.load(lazy.root()->get(k)->tensor), kv.value().toTensor())) << k;
    }
    torch::manual_seed(0);
    EXPECT_TRUE(torch::equal(io::dict_get(got, "f32", f).toTensor(), torch::randn({3, 4})));
    EXPECT_EQ(io::dict_get(got, "c64", f).toTensor().scalar_type(), torch::kComplexFloat);
    EXPECT_EQ(io::dict_get(got, "bf16", f).toTensor().scalar_type(), torch::kBFloat16);
    EXPECT_EQ(io::dict_get(got, "noncontig", f).toTensor().sizes(), (std::vector<int64_t>{6, 4}));
    const auto nested = io::dict_get(got, "nested", f);
    EXPECT_EQ(io::dict_get(nested, "big", f).toInt(), int64_t(1) << 40);
    EXPECT_EQ(io::dict_get(nested, "neg", f).toInt(), -70000);
    EXPECT_EQ(io::dict_get(nested, "name", f).toStringRef(), "vit_base");
    // Views of one storage still share one record.
    EXPECT_EQ(lazy.root()->get("views.t")->tensor.storage, lazy.root()->get("views.base")->tensor.storage);
  }
  // An unfinished writer leaves nothing behind.
  {
    io::ArchiveWriter w((d / "unfinished.pt").string());
    w.add_tensor(torch::ones({3}));
  }
  EXPECT_FALSE(fs::exists(d / "unfinished.pt"));
  size_t leftovers = 0;
  for (auto& e : fs::directory_iterator(d)) leftovers += e.path().string().find(".tmp.") != std::string::npos;
  EXPECT_EQ(leftovers, 0u);
  fs::remove_all(d);
}
