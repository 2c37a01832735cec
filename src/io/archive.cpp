#include "instinct/io/archive.h"

#include <caffe2/serialize/inline_container.h>
#include <sys/stat.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/unpickler.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <unordered_set>

#include "instinct/common/error.h"
#include "instinct/io/atomic_file.h"

namespace instinct::io {
namespace {

std::string first_line(const std::string& s) {
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

std::string error_text(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return first_line(ce->what_without_backtrace());
  return first_line(e.what());
}

// Python-side name of an IValue's type, for messages.
std::string type_name(const c10::IValue& v) {
  if (v.isGenericDict()) return "dict";
  if (v.isList()) return "list";
  if (v.isTuple()) return "tuple";
  if (v.isString()) return "str";
  if (v.isInt()) return "int";
  if (v.isDouble()) return "float";
  if (v.isBool()) return "bool";
  if (v.isNone()) return "None";
  if (v.isTensor()) return "tensor";
  return v.tagKind();
}

// Rewrites `v` into the subset that Python's weights_only unpickler accepts: string-keyed generic
// dicts, untyped lists (typed lists would pickle as torch.jit._pickle.build_* globals), and
// standalone CPU tensors.
class Normalizer {
 public:
  explicit Normalizer(const std::string& path) : path_(path) {}

  c10::IValue run(const c10::IValue& v, const std::string& at) {
    if (v.isTensor()) return tensor(v.toTensor());
    if (v.isGenericDict()) {
      c10::impl::GenericDict out(c10::StringType::get(), c10::AnyType::get());
      for (const auto& kv : v.toGenericDict()) {
        INSTINCT_CHECK(kv.key().isString(), path_, ": cannot save dict at ", at, ": key of type ",
                       type_name(kv.key()), ", expected string keys");
        const std::string& k = kv.key().toStringRef();
        out.insert(k, run(kv.value(), at + "." + k));
      }
      return out;
    }
    if (v.isList()) {
      c10::impl::GenericList out(c10::AnyType::get());
      const auto list = v.toListRef();
      out.reserve(list.size());
      for (size_t i = 0; i < list.size(); ++i) out.push_back(run(list[i], at + "[" + std::to_string(i) + "]"));
      return out;
    }
    if (v.isTuple()) {
      std::vector<c10::IValue> elems;
      const auto& src = v.toTupleRef().elements();
      for (size_t i = 0; i < src.size(); ++i) elems.push_back(run(src[i], at + "[" + std::to_string(i) + "]"));
      return c10::ivalue::Tuple::create(std::move(elems));
    }
    if (v.isString() || v.isInt() || v.isDouble() || v.isBool() || v.isNone()) return v;
    fail(path_, ": cannot save value of type ", type_name(v), " at ", at,
         "; expected dict, list, tuple, tensor, string, int, float, bool or None");
  }

 private:
  c10::IValue tensor(at::Tensor t) {
    INSTINCT_CHECK(t.layout() == at::kStrided && !t.is_quantized(), path_,
                   ": cannot save sparse/quantized tensor; expected dense tensors");
    t = t.detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
    const auto* storage = t.storage().unsafeGetStorageImpl();
    bool whole = t.storage_offset() == 0 &&
                 t.storage().nbytes() == static_cast<size_t>(t.numel()) * t.element_size();
    if (!whole || !seen_.insert(storage).second) {
      t = t.clone();
      seen_.insert(t.storage().unsafeGetStorageImpl());
    }
    return t;
  }

  const std::string& path_;
  std::unordered_set<const void*> seen_;
};

// ---- pickle scanning (diagnostics for what LibTorch's unpickler cannot represent) and rewriting
// (what Python's pickler writes that LibTorch 1.13's unpickler cannot read) ----

struct PickleScan {
  bool ordered_dict_container = false;  // an OrderedDict used as a value, not as tensor hooks
  std::string ordered_dict_key;         // the dict key written just before it ("" at top level)
  std::vector<std::string> globals;     // "module.name", in order of first appearance
  int protocol = -1;                    // from the PROTO opcode
  std::string rewritten;                // the pickle as LibTorch can read it ("" if unchanged)
};

// One byte-level change of the rewritten pickle: `removed` input bytes at `at` are replaced by
// `bytes[0, len)` (an insertion when removed == 0).
struct PickleEdit {
  size_t at;
  uint8_t removed, len;
  char bytes[10];
};

// Simulates the pickle stack, recording for each value the input offset of the first opcode that
// produced it, so that a MARK can be inserted in front of a SETITEM's key or an APPEND's value.
// Python's marks live on a separate metastack, as LibTorch's do. `ok` turns false at anything
// inconsistent (underflow, a missing mark); the structural rewrite is then not applied.
class PickleStackModel {
 public:
  bool ok = true;

  void push(size_t at) { starts_.push_back(at); }
  void mark(size_t at) {
    marks_.push_back(starts_.size());
    mark_at_.push_back(at);
  }
  // Pops k values (k >= 1) and pushes their result, which starts where the first popped one did.
  void fold(size_t k) {
    if (!has(k)) return fail();
    const size_t s = starts_[starts_.size() - k];
    starts_.resize(starts_.size() - k + 1);
    starts_.back() = s;
  }
  void pop(size_t k) {
    if (!has(k)) return fail();
    starts_.resize(starts_.size() - k);
  }
  // Pops the values above the last mark and the mark; `push_result` pushes the value built from
  // them (TUPLE, LIST, DICT, INST, OBJ), which starts at the MARK.
  void pop_mark(bool push_result) {
    if (marks_.empty()) return fail();
    starts_.resize(marks_.back());
    if (push_result) starts_.push_back(mark_at_.back());
    marks_.pop_back();
    mark_at_.pop_back();
  }
  // Start offset of the value `depth` places below the top (0 = top); needs depth + 1 + below
  // values above the last mark (the container below the operands must be in the same frame).
  bool start_of(size_t depth, size_t below, size_t* at) {
    if (!has(depth + 1 + below)) {
      fail();
      return false;
    }
    *at = starts_[starts_.size() - 1 - depth];
    return true;
  }

 private:
  bool has(size_t k) const { return starts_.size() - (marks_.empty() ? 0 : marks_.back()) >= k; }
  void fail() { ok = false; }

  std::vector<size_t> starts_;   // per stack value: input offset of its first opcode
  std::vector<size_t> marks_;    // stack size at each MARK
  std::vector<size_t> mark_at_;  // input offset of each MARK
};

// Applies sorted-by-offset edits to p[0, n).
std::string apply_edits(const uint8_t* p, size_t n, std::vector<PickleEdit>& edits) {
  // Insertions before replacements at the same offset (a MARK goes in front of a widened LONG1).
  std::stable_sort(edits.begin(), edits.end(), [](const PickleEdit& a, const PickleEdit& b) {
    return a.at != b.at ? a.at < b.at : a.removed < b.removed;
  });
  std::string out;
  out.reserve(n + edits.size() * 8);
  size_t copied = 0;
  for (const auto& e : edits) {
    out.append(reinterpret_cast<const char*>(p + copied), e.at - copied);
    out.append(e.bytes, e.len);
    copied = e.at + e.removed;
  }
  out.append(reinterpret_cast<const char*>(p + copied), n - copied);
  return out;
}

bool known_global(const std::string& g) {
  static const std::set<std::string> known = {
      "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_qtensor",
      "torch._utils._rebuild_sparse_tensor", "torch._tensor._rebuild_from_type_v2",
      "collections.OrderedDict", "builtins.complex", "torch.device"};
  if (known.count(g)) return true;
  if (g.rfind("torch.jit._pickle.", 0) == 0 || g.rfind("__main__.", 0) == 0) return true;
  return g.rfind("torch.", 0) == 0 && g.size() > 13 && g.compare(g.size() - 7, 7, "Storage") == 0 &&
         g.find('.', 6) == std::string::npos;
}

// Walks pickle opcodes (protocols 0-5). The only legitimate OrderedDict in a torch.save file is a
// tensor's (or Parameter's) empty backward-hooks argument: `OrderedDict` `()` REDUCE [memo] followed
// by the TUPLE closing the rebuild arguments (or the metadata dict that may follow it in 2.x).
// Stops silently at anything it does not understand; the unpickler then has the last word.
//
// In the same pass it prepares the copy of the pickle that LibTorch 1.13's unpickler reads:
//  - LONG1 ints shorter than 8 bytes (Python writes the minimal length) are widened to 8 bytes;
//  - SETITEM (Python writes it for a dict with exactly one item, or a trailing single item after
//    full batches of 1000) becomes MARK <key> <value> SETITEMS, and APPEND likewise becomes
//    MARK <value> APPENDS: LibTorch implements neither SETITEM nor APPEND. The MARK is inserted at
//    the input offset where the key's (value's) opcodes start, tracked by PickleStackModel.
// The SETITEM/APPEND rewrite is applied only if the whole pickle up to STOP was modelled;
// otherwise those bytes are left unchanged and the unpickler reports as before.
PickleScan scan_pickle(const uint8_t* p, size_t n) {
  PickleScan r;
  std::set<uint64_t> memo, od_memo;
  std::vector<std::string> strings;  // recent string literals, for STACK_GLOBAL
  size_t i = 0;
  auto need = [&](size_t k) { return i + k <= n; };
  auto le = [&](size_t k) {
    uint64_t v = 0;
    for (size_t b = 0; b < k; ++b) v |= uint64_t(p[i + b]) << (8 * b);
    return v;
  };
  auto line = [&](std::string& out) {
    size_t e = i;
    while (e < n && p[e] != '\n') ++e;
    if (e >= n) return false;
    out.assign(reinterpret_cast<const char*>(p + i), e - i);
    i = e + 1;
    return true;
  };
  auto add_global = [&](const std::string& g) {
    if (std::find(r.globals.begin(), r.globals.end(), g) == r.globals.end()) r.globals.push_back(g);
  };
  std::vector<PickleEdit> widen_edits, struct_edits;  // LONG1 widening; SETITEM/APPEND rewrite
  PickleStackModel stack;
  bool stopped = false;  // reached STOP with every opcode modelled
  auto finish = [&]() -> PickleScan& {
    if (stopped && stack.ok) widen_edits.insert(widen_edits.end(), struct_edits.begin(), struct_edits.end());
    if (!widen_edits.empty()) r.rewritten = apply_edits(p, n, widen_edits);
    return r;
  };
  // SETITEM / APPEND at op_at: MARK in front of the operand `depth` below the top, op -> `multi`.
  auto to_batch = [&](size_t op_at, size_t depth, char multi) {
    size_t at = 0;
    if (!stack.start_of(depth, /*below=*/1, &at)) return;
    struct_edits.push_back({at, 0, 1, {'('}});
    struct_edits.push_back({op_at, 1, 1, {multi}});
  };
  // OrderedDict-use state: -1 none; 0 class on stack; 1 saw (); 2 saw REDUCE. Memo ops keep state.
  int pending = -1;
  bool od_class_on_top = false;
  while (i < n) {
    const size_t op_at = i;
    uint8_t op = p[i++];
    bool is_memo_op = op == 'q' || op == 'r' || op == 0x94 || op == 'p';
    if (pending != -1 && !is_memo_op) {
      if (pending == 0 && op == ')') pending = 1;
      else if (pending == 1 && op == 'R') pending = 2;
      else {
        if (!(pending == 2 && (op == 't' || op == 0x85 || op == 0x86 || op == 0x87 || op == '}')))
          r.ordered_dict_container = true;
        pending = -1;
      }
    }
    uint64_t memo_key = 0;
    bool memo_put = false, od_now = false;
    std::string a, b;
    switch (op) {
      case 0x80: if (!need(1)) return finish(); r.protocol = p[i]; i += 1; break;  // PROTO
      case 0x95: if (!need(8)) return finish(); i += 8; break;                 // FRAME
      case 'c': case 'i':                                                 // GLOBAL, INST
        if (!line(a) || !line(b)) return finish();
        add_global(a + "." + b);
        od_now = a == "collections" && b == "OrderedDict";
        break;
      case 0x93:                                                          // STACK_GLOBAL
        if (strings.size() < 2) return finish();
        a = strings[strings.size() - 2], b = strings.back();
        strings.resize(strings.size() - 2);
        add_global(a + "." + b);
        od_now = a == "collections" && b == "OrderedDict";
        break;
      case 'q': if (!need(1)) return finish(); memo_key = le(1); i += 1; memo_put = true; break;
      case 'r': if (!need(4)) return finish(); memo_key = le(4); i += 4; memo_put = true; break;
      case 0x94: memo_key = memo.size(); memo_put = true; break;
      case 'p': if (!line(a)) return finish(); memo_key = std::strtoull(a.c_str(), nullptr, 10); memo_put = true; break;
      case 'h': if (!need(1)) return finish(); od_now = od_memo.count(le(1)) > 0; i += 1; break;
      case 'j': if (!need(4)) return finish(); od_now = od_memo.count(le(4)) > 0; i += 4; break;
      case 'g': if (!line(a)) return finish(); od_now = od_memo.count(std::strtoull(a.c_str(), nullptr, 10)) > 0; break;
      case 'J': case 0x84: if (!need(4)) return finish(); i += 4; break;        // BININT, EXT4
      case 'K': case 0x82: if (!need(1)) return finish(); i += 1; break;        // BININT1, EXT1
      case 'M': case 0x83: if (!need(2)) return finish(); i += 2; break;        // BININT2, EXT2
      case 'G': if (!need(8)) return finish(); i += 8; break;                   // BINFLOAT
      case 0x8a: {                                                       // LONG1
        if (!need(1) || !need(1 + le(1))) return finish();
        const size_t len = p[i];
        if (len < 8) {  // LibTorch reads only 8-byte LONG1; Python writes the minimal length
          uint64_t v = 0;
          for (size_t b = 0; b < len; ++b) v |= uint64_t(p[i + 1 + b]) << (8 * b);
          if (len > 0 && (p[i + len] & 0x80)) v |= ~uint64_t(0) << (8 * len);
          PickleEdit e{op_at, static_cast<uint8_t>(2 + len), 10, {char(0x8a), 8}};
          for (int b = 0; b < 8; ++b) e.bytes[2 + b] = char((v >> (8 * b)) & 0xff);
          widen_edits.push_back(e);
        }
        i += 1 + len;
        break;
      }
      case 0x8b: if (!need(4) || !need(4 + le(4))) return finish(); i += 4 + le(4); break;  // LONG4
      case 'X': case 'T': case 'B':                                      // BINUNICODE/BINSTRING/BINBYTES
        if (!need(4) || !need(4 + le(4))) return finish();
        if (op == 'X') strings.emplace_back(reinterpret_cast<const char*>(p + i + 4), le(4));
        i += 4 + le(4);
        break;
      case 0x8c: case 'U': case 'C':                                     // short variants
        if (!need(1) || !need(1 + le(1))) return finish();
        if (op == 0x8c) strings.emplace_back(reinterpret_cast<const char*>(p + i + 1), le(1));
        i += 1 + le(1);
        break;
      case 0x8d: case 0x8e: case 0x96:                                   // 8-byte length variants
        if (!need(8) || !need(8 + le(8))) return finish();
        i += 8 + le(8);
        break;
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P':        // text-argument opcodes
        if (!line(a)) return finish();
        break;
      case '(': case '.': case '0': case '1': case '2': case ')': case 't': case 0x85: case 0x86:
      case 0x87: case ']': case 'a': case 'e': case 'l': case '}': case 's': case 'u': case 'd':
      case 'R': case 'b': case 0x81: case 0x92: case 'Q': case 'N': case 0x88: case 0x89: case 0x8f:
      case 0x90: case 0x91: case 0x97: case 0x98: case 'o':
        break;
      default:
        return finish();  // unknown opcode: give up scanning
    }
    // Stack effect (opcode arguments were consumed above).
    switch (op) {
      case '(': stack.mark(op_at); break;                                  // MARK
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P':          // text-argument pushes
      case 'J': case 'K': case 'M': case 0x8a: case 0x8b: case 'G':        // ints, LONG1/4, BINFLOAT
      case 'X': case 'T': case 'B': case 0x8c: case 'U': case 'C':         // strings, bytes
      case 0x8d: case 0x8e: case 0x96: case 'N': case 0x88: case 0x89:     // ..., None, bools
      case '}': case ']': case ')': case 0x8f: case 'c': case 'h': case 'j': case 'g':
      case 0x82: case 0x83: case 0x84: case 0x97:                           // EXT*, NEXT_BUFFER
        stack.push(op_at);
        break;
      case 0x85: stack.fold(1); break;                                     // TUPLE1
      case 0x86: stack.fold(2); break;                                     // TUPLE2
      case 0x87: stack.fold(3); break;                                     // TUPLE3
      case 'R': case 0x81: case 0x93: stack.fold(2); break;                // REDUCE, NEWOBJ, STACK_GLOBAL
      case 0x92: stack.fold(3); break;                                     // NEWOBJ_EX
      case 'Q': stack.fold(1); break;                                      // BINPERSID
      case 't': case 'l': case 'd': case 0x91: case 'i': case 'o':         // TUPLE, LIST, DICT, FROZENSET, INST, OBJ
        stack.pop_mark(/*push_result=*/true);
        break;
      case 'u': case 'e': case 0x90: case '1':                            // SETITEMS, APPENDS, ADDITEMS, POP_MARK
        stack.pop_mark(/*push_result=*/false);
        break;
      case '0': case 'b': stack.pop(1); break;                             // POP, BUILD
      case '2': { size_t at = 0; if (stack.start_of(0, 0, &at)) stack.push(op_at); break; }  // DUP
      case 's': to_batch(op_at, 1, 'u'); stack.pop(2); break;               // SETITEM -> SETITEMS
      case 'a': to_batch(op_at, 0, 'e'); stack.pop(1); break;               // APPEND -> APPENDS
      case '.': stopped = true; break;                                     // STOP
      default: break;                                                      // PROTO, FRAME, memo puts, READONLY_BUFFER
    }
    if (memo_put) {
      if (od_class_on_top) od_memo.insert(memo_key);
      memo.insert(memo_key);
    } else {
      od_class_on_top = od_now;
    }
    if (od_now) {
      if (pending != -1) r.ordered_dict_container = true;
      if (!r.ordered_dict_container) r.ordered_dict_key = strings.empty() ? "" : strings.back();
      pending = 0;
    }
    if (op == '.') break;
    if (strings.size() > 8) strings.erase(strings.begin());
  }
  if (pending == 0 || pending == 1) r.ordered_dict_container = true;
  return finish();
}

bool is_zip_magic(const std::string& head) { return head.size() >= 4 && head.compare(0, 4, "PK\x03\x04", 4) == 0; }

void check_readable(const std::string& path) {
  struct stat st {};
  INSTINCT_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open checkpoint: ",
                 std::strerror(errno));
  INSTINCT_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, expected a torch.save file");
  std::ifstream in(path, std::ios::binary);
  INSTINCT_CHECK(in.is_open(), path, ": cannot open checkpoint for reading: ", std::strerror(errno));
  char head[4] = {0, 0, 0, 0};
  in.read(head, 4);
  std::string h(head, static_cast<size_t>(in.gcount()));
  INSTINCT_CHECK(!h.empty(), path, ": file is empty, expected a torch.save zip archive");
  INSTINCT_CHECK(static_cast<uint8_t>(h[0]) != 0x80, path,
                 ": legacy (pre-1.6) torch.save format or a plain pickle, not a zip archive; "
                 "re-save it with torch >= 1.6: torch.save(torch.load(path), path)");
  INSTINCT_CHECK(is_zip_magic(h), path,
                 ": not a torch.save file (no zip signature); expected a zip archive written by "
                 "torch.save");
}

}  // namespace

void save_object(const std::string& path, const c10::IValue& obj) {
  c10::IValue norm = Normalizer(path).run(obj, "<root>");
  std::string pickle;
  torch::jit::Pickler pickler([&](const char* buf, size_t size) { pickle.append(buf, size); },
                              /*tensor_table=*/nullptr, /*type_renamer=*/nullptr,
                              /*memoized_class_types=*/nullptr, /*get_tensor_id=*/nullptr,
                              /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(norm);
  pickler.stop();

  AtomicFile file(path);
  std::ofstream out(file.temp_path(), std::ios::binary | std::ios::trunc);
  INSTINCT_CHECK(out.is_open(), path, ": cannot create '", file.temp_path(), "': ", std::strerror(errno));
  {
    // Always report success to miniz (a failure there would throw from the writer's destructor);
    // the stream state is checked after closing.
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, size_t n) -> size_t {
      out.write(static_cast<const char*>(buf), static_cast<std::streamsize>(n));
      return n;
    });
    try {
      torch::jit::writeArchiveAndTensors("data", pickle.data(), pickle.size(), pickler.tensorData(), writer);
      writer.writeEndOfFile();
    } catch (const c10::Error& e) {
      fail(path, ": writing torch archive failed (disk full?): ", error_text(e));
    }
  }
  out.close();
  INSTINCT_CHECK(!out.fail(), path, ": writing '", file.temp_path(), "' failed (disk full?)");
  file.commit();
}

c10::IValue tensor_dict(const TensorList& tensors) {
  c10::impl::GenericDict d(c10::StringType::get(), c10::AnyType::get());
  for (const auto& [name, t] : tensors) {
    INSTINCT_CHECK(!d.contains(name), "tensor_dict: duplicate key '", name, "'; expected unique names");
    d.insert(name, t);
  }
  return d;
}

c10::IValue load_object(const std::string& path) {
  check_readable(path);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    fail(path, ": truncated or corrupt zip archive (", error_text(e),
         "); expected a complete torch.save file");
  }
  if (!reader->hasRecord("data.pkl")) {
    bool script = reader->hasRecord("constants.pkl") || reader->hasRecord("code/__torch__.py");
    fail(path, script ? ": is a TorchScript archive (torch.jit.save); expected a torch.save dict"
                      : ": zip archive has no data.pkl; expected a file written by torch.save");
  }
  PickleScan scan;
  try {
    auto rec = reader->getRecord("data.pkl");
    scan = scan_pickle(static_cast<const uint8_t*>(std::get<0>(rec).get()), std::get<1>(rec));
  } catch (const c10::Error& e) {
    fail(path, ": corrupt archive, cannot read data.pkl (", error_text(e), ")");
  }
  INSTINCT_CHECK(!scan.ordered_dict_container, path, ": contains an OrderedDict (",
                 scan.ordered_dict_key.empty() ? std::string("the top-level object")
                                               : "near key '" + scan.ordered_dict_key + "'",
                 ", e.g. a raw model.state_dict()), which LibTorch cannot load; re-save it in Python "
                 "as a plain dict: torch.save(dict(sd), path) (nested state dicts too)");
  c10::IValue v;
  try {
    // readArchiveAndTensors("data", ...) with the pickle swapped for the rewritten one when needed.
    auto rec = reader->getRecord("data.pkl");
    const char* data = scan.rewritten.empty() ? static_cast<const char*>(std::get<0>(rec).get()) : scan.rewritten.data();
    const size_t size = scan.rewritten.empty() ? std::get<1>(rec) : scan.rewritten.size();
    size_t pos = 0;
    torch::jit::Unpickler unpickler(
        [&](char* buf, size_t len) -> size_t {
          len = std::min(len, size - pos);
          std::memcpy(buf, data + pos, len);
          pos += len;
          return len;
        },
        /*type_resolver=*/nullptr, /*obj_loader=*/nullptr,
        [&](const std::string& name) { return std::get<0>(reader->getRecord("data/" + name)); },
        at::Device(at::kCPU));
    unpickler.set_version(reader->version());
    v = unpickler.parse_ivalue();
  } catch (const std::exception& e) {
    for (const auto& g : scan.globals) {
      if (g == "torch._utils._rebuild_parameter")
        fail(path, ": contains an nn.Parameter (torch._utils._rebuild_parameter), which LibTorch "
                   "cannot load; save plain tensors (p.detach() or a state_dict) instead");
      INSTINCT_CHECK(known_global(g), path, ": contains Python class '", g,
                     "' which LibTorch cannot load; expected only dicts, lists, tuples, tensors, "
                     "strings and numbers");
    }
    INSTINCT_CHECK(scan.protocol == 2 || scan.protocol == -1, path, ": saved with pickle protocol ",
                   scan.protocol, ", LibTorch reads only protocol 2; re-save with torch.save's "
                   "default (no pickle_protocol argument)");
    fail(path, ": corrupt or unsupported torch.save archive (", error_text(e), ")");
  }
  INSTINCT_CHECK(v.isGenericDict(), path, ": top-level object is a ", type_name(v),
                 ", expected a dict (torch.save({...}, path))");
  return v;
}

TensorList to_tensor_list(const c10::IValue& dict, const std::string& what_for_errors) {
  INSTINCT_CHECK(dict.isGenericDict(), what_for_errors, ": is a ", type_name(dict),
                 ", expected a dict of name -> tensor");
  TensorList out;
  for (const auto& kv : dict.toGenericDict()) {
    INSTINCT_CHECK(kv.key().isString(), what_for_errors, ": has a key of type ", type_name(kv.key()),
                   ", expected string keys");
    INSTINCT_CHECK(kv.value().isTensor(), what_for_errors, ": value of key '", kv.key().toStringRef(),
                   "' is a ", type_name(kv.value()), ", expected a tensor");
    out.emplace_back(kv.key().toStringRef(), kv.value().toTensor());
  }
  return out;
}

c10::IValue dict_get(const c10::IValue& dict, const std::string& key,
                     const std::string& what_for_errors) {
  INSTINCT_CHECK(dict.isGenericDict(), what_for_errors, ": is a ", type_name(dict), ", expected a dict");
  const auto d = dict.toGenericDict();
  auto it = d.find(key);
  if (it != d.end()) return it->value();
  std::string keys;
  for (const auto& kv : d) {
    if (!keys.empty()) keys += ", ";
    keys += kv.key().isString() ? kv.key().toStringRef() : type_name(kv.key());
  }
  fail(what_for_errors, ": missing key '", key, "' (keys: ", keys.empty() ? "none" : keys, ")");
}

}  // namespace instinct::io
