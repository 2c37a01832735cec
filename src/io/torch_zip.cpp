#include "instinct/io/torch_zip.h"

#include <caffe2/serialize/inline_container.h>
#include <c10/core/ScalarType.h>
#include <sys/stat.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "instinct/common/error.h"
#include "instinct/io/atomic_file.h"

namespace instinct::io {
namespace {

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string error_text(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return first_line(ce->what_without_backtrace());
  return first_line(e.what());
}

const std::vector<std::pair<std::string, at::ScalarType>>& storage_classes() {
  static const std::vector<std::pair<std::string, at::ScalarType>> m = {
      {"FloatStorage", at::kFloat},     {"DoubleStorage", at::kDouble},        {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong},          {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},     {"CharStorage", at::kChar},            {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},       {"ComplexFloatStorage", at::kComplexFloat},
      {"ComplexDoubleStorage", at::kComplexDouble}, {"UntypedStorage", at::kByte}};
  return m;
}

// ---- reading: a pickle interpreter for what torch.save writes ----

class Unpickler {
 public:
  Unpickler(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}

  PyPtr run() {
    for (;;) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                       // PROTO
        case 0x95: take(8); break;                      // FRAME
        case '.': {                                     // STOP
          need(1, "STOP");
          return pop();
        }
        case '}': push(PyValue::make_dict()); break;    // EMPTY_DICT
        case ']': push(PyValue::make_list({})); break;  // EMPTY_LIST
        case ')': push(PyValue::make_tuple({})); break; // EMPTY_TUPLE
        case '(': marks_.push_back(stack_.size()); break;
        case 't': push(PyValue::make_tuple(pop_mark())); break;
        case 'l': push(PyValue::make_list(pop_mark())); break;
        case 'd': {
          auto d = PyValue::make_dict();
          auto v = pop_mark();
          bad(v.size() % 2 != 0, "DICT with an odd number of items");
          for (size_t i = 0; i < v.size(); i += 2) d->dict.emplace_back(v[i], v[i + 1]);
          push(d);
          break;
        }
        case 0x85: case 0x86: case 0x87: {               // TUPLE1..3
          const size_t k = op - 0x84u;
          need(k, "TUPLEn");
          std::vector<PyPtr> v(stack_.end() - static_cast<std::ptrdiff_t>(k), stack_.end());
          stack_.resize(stack_.size() - k);
          push(PyValue::make_tuple(std::move(v)));
          break;
        }
        case 'a': {
          auto v = pop();
          list_top("APPEND")->items.push_back(v);
          break;
        }
        case 'e': {
          auto v = pop_mark();
          auto l = list_top("APPENDS");
          l->items.insert(l->items.end(), v.begin(), v.end());
          break;
        }
        case 's': {
          auto v = pop();
          auto k = pop();
          dict_top("SETITEM")->dict.emplace_back(k, v);
          break;
        }
        case 'u': {
          auto v = pop_mark();
          bad(v.size() % 2 != 0, "SETITEMS with an odd number of items");
          auto d = dict_top("SETITEMS");
          for (size_t i = 0; i < v.size(); i += 2) d->dict.emplace_back(v[i], v[i + 1]);
          break;
        }
        case 'q': memo_[byte()] = top("BINPUT"); break;
        case 'r': memo_[u32()] = top("LONG_BINPUT"); break;
        case 0x94: memo_[uint32_t(memo_.size())] = top("MEMOIZE"); break;
        case 'h': push(memo(byte())); break;
        case 'j': push(memo(u32())); break;
        case '0': pop(); break;
        case '2': push(top("DUP")); break;
        case 'c': {                                                      // GLOBAL
          std::string mod = line(), name = line();
          auto g = std::make_shared<PyValue>();
          g->kind = PyValue::Kind::Global;
          g->s = mod + "." + name;
          push(g);
          break;
        }
        case 0x93: {                                                     // STACK_GLOBAL
          auto name = pop(), mod = pop();
          auto g = std::make_shared<PyValue>();
          g->kind = PyValue::Kind::Global;
          g->s = mod->s + "." + name->s;
          push(g);
          break;
        }
        case 'Q': push(persistent(pop())); break;                         // BINPERSID
        case 'R': {                                                      // REDUCE
          auto args = pop();
          auto fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 0x81: {                                                     // NEWOBJ
          auto args = pop();
          auto cls = pop();
          push(reduce(cls, args));
          break;
        }
        case 'b': pop(); top("BUILD"); break;  // BUILD: state (e.g. an OrderedDict's _metadata) dropped
        case 'J': { int32_t v; std::memcpy(&v, take(4), 4); push(PyValue::integer(v)); break; }
        case 'K': push(PyValue::integer(byte())); break;
        case 'M': { uint16_t v; std::memcpy(&v, take(2), 2); push(PyValue::integer(v)); break; }
        case 0x8a: push(PyValue::integer(long_bytes(byte()))); break;
        case 0x8b: push(PyValue::integer(long_bytes(u32()))); break;
        case 'G': {
          const uint8_t* b = take(8);
          uint64_t u = 0;
          for (int k = 0; k < 8; ++k) u = u << 8 | b[k];
          double d;
          std::memcpy(&d, &u, 8);
          push(PyValue::real(d));
          break;
        }
        case 'X': case 'T': { uint32_t len = u32(); push(PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len))); break; }
        case 0x8c: case 'U': { uint8_t len = byte(); push(PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len))); break; }
        case 0x8d: { uint64_t len; std::memcpy(&len, take(8), 8); push(PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len))); break; }
        case 'B': case 'C': {
          uint32_t len = op == 'B' ? u32() : byte();
          auto v = PyValue::str(std::string(reinterpret_cast<const char*>(take(len)), len));
          v->kind = PyValue::Kind::Bytes;
          push(v);
          break;
        }
        case 'N': push(PyValue::none()); break;
        case 0x88: push(PyValue::boolean(true)); break;
        case 0x89: push(PyValue::boolean(false)); break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(path_, ": data.pkl uses pickle opcode ", hex, " at byte ", pos_ - 1,
               ", which a torch.save state dict never contains; expected a file written by torch.save");
        }
      }
    }
  }

 private:
  [[noreturn]] void corrupt(const std::string& what) {
    fail(path_, ": corrupt data.pkl (", what, " at byte ", pos_, "); expected a file written by torch.save");
  }
  void bad(bool cond, const std::string& what) {
    if (cond) corrupt(what);
  }
  uint8_t byte() { return *take(1); }
  uint32_t u32() {
    uint32_t v;
    std::memcpy(&v, take(4), 4);
    return v;
  }
  const uint8_t* take(uint64_t n) {
    bad(n > n_ - pos_, "unexpected end");
    const uint8_t* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  std::string line() {
    std::string s;
    for (;;) {
      char c = static_cast<char>(byte());
      if (c == '\n') return s;
      s += c;
    }
  }
  int64_t long_bytes(uint64_t n) {
    bad(n > 8, "integer wider than 64 bits");
    const uint8_t* b = take(n);
    uint64_t u = 0;
    for (uint64_t k = 0; k < n; ++k) u |= uint64_t(b[k]) << (8 * k);
    if (n > 0 && n < 8 && (b[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
    return static_cast<int64_t>(u);
  }
  void need(size_t k, const char* what) {
    const size_t base = marks_.empty() ? 0 : marks_.back();
    bad(stack_.size() < base + k, std::string("stack underflow in ") + what);
  }
  void push(PyPtr v) { stack_.push_back(std::move(v)); }
  PyPtr pop() {
    need(1, "pop");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PyPtr top(const char* what) {
    need(1, what);
    return stack_.back();
  }
  std::vector<PyPtr> pop_mark() {
    bad(marks_.empty(), "missing MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyPtr> v(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return v;
  }
  PyPtr memo(uint32_t k) {
    auto it = memo_.find(k);
    bad(it == memo_.end(), "memo key " + std::to_string(k) + " not set");
    return it->second;
  }
  PyPtr list_top(const char* what) {
    auto l = top(what);
    bad(l->kind != PyValue::Kind::List, std::string(what) + " on a " + l->type_name());
    return l;
  }
  PyPtr dict_top(const char* what) {
    auto d = top(what);
    bad(d->kind != PyValue::Kind::Dict, std::string(what) + " on a " + d->type_name());
    return d;
  }
  static int64_t as_int(const PyPtr& v) { return v && v->kind == PyValue::Kind::Int ? v->i : -1; }
  std::vector<int64_t> ints(const PyPtr& t, const char* what) {
    bad(!t || t->kind != PyValue::Kind::Tuple, std::string("tensor ") + what + " is not a tuple");
    std::vector<int64_t> v;
    for (const auto& x : t->items) {
      bad(x->kind != PyValue::Kind::Int, std::string("tensor ") + what + " holds a non-integer");
      v.push_back(x->i);
    }
    return v;
  }

  PyPtr persistent(const PyPtr& pid) {
    bad(pid->kind != PyValue::Kind::Tuple || pid->items.size() < 5 || !pid->items[0]->is_str() ||
            pid->items[0]->s != "storage",
        "persistent id is not a ('storage', ...) tuple");
    const auto& cls = pid->items[1];
    bad(cls->kind != PyValue::Kind::Global, "storage type is not a class");
    std::string name = cls->s.substr(cls->s.rfind('.') + 1);
    auto st = std::make_shared<PyValue>();
    st->kind = PyValue::Kind::Storage;
    bool known = false;
    for (const auto& [n, t] : storage_classes())
      if (n == name) st->tensor.dtype = t, known = true;
    INSTINCT_CHECK(known, path_, ": storage of type '", cls->s, "' is not supported; expected one of the dense "
                   "CPU/CUDA storage types (FloatStorage, HalfStorage, BFloat16Storage, ...)");
    bad(!pid->items[2]->is_str() || !pid->items[3]->is_str() || pid->items[4]->kind != PyValue::Kind::Int,
        "malformed storage reference");
    st->tensor.storage = pid->items[2]->s;
    st->tensor.location = pid->items[3]->s;
    st->tensor.storage_numel = pid->items[4]->i;
    return st;
  }

  PyPtr reduce(const PyPtr& fn, const PyPtr& args) {
    bad(fn->kind != PyValue::Kind::Global, "REDUCE of a " + fn->type_name());
    bad(args->kind != PyValue::Kind::Tuple, "REDUCE arguments are not a tuple");
    const std::string& g = fn->s;
    const auto& a = args->items;
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      bad(a.size() < 4 || a[0]->kind != PyValue::Kind::Storage, "malformed _rebuild_tensor arguments");
      TensorRef r = a[0]->tensor;
      r.offset = as_int(a[1]);
      r.sizes = ints(a[2], "size");
      r.strides = ints(a[3], "stride");
      bad(r.offset < 0 || r.sizes.size() != r.strides.size(), "malformed tensor layout");
      r.requires_grad = a.size() > 4 && a[4]->kind == PyValue::Kind::Bool && a[4]->b;
      int64_t extent = r.offset;
      bool empty = false;
      for (size_t d = 0; d < r.sizes.size(); ++d) {
        bad(r.sizes[d] < 0 || r.strides[d] < 0, "negative size or stride");
        empty |= r.sizes[d] == 0;
        extent += (r.sizes[d] - 1) * r.strides[d];
      }
      INSTINCT_CHECK(empty || extent < r.storage_numel, path_, ": tensor on storage '", r.storage,
                     "' reaches element ", extent, " of a storage with ", r.storage_numel,
                     " elements; the archive is corrupt");
      return PyValue::make_tensor(r);
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      bad(a.empty() || !a[0]->is_tensor(), "malformed _rebuild_parameter arguments");
      auto t = std::make_shared<PyValue>(*a[0]);
      t->tensor.requires_grad = a.size() > 1 && a[1]->kind == PyValue::Kind::Bool && a[1]->b;
      return t;
    }
    if (g == "torch._tensor._rebuild_from_type_v2") {
      bad(a.size() < 3, "malformed _rebuild_from_type_v2 arguments");
      return reduce(a[0], a[2]);
    }
    if (g == "collections.OrderedDict" || g == "builtins.dict") {
      auto d = PyValue::make_dict();
      if (!a.empty() && a[0]->kind == PyValue::Kind::List)
        for (const auto& kv : a[0]->items) {
          bad(kv->kind != PyValue::Kind::Tuple || kv->items.size() != 2, "malformed dict items");
          d->dict.emplace_back(kv->items[0], kv->items[1]);
        }
      return d;
    }
    auto o = std::make_shared<PyValue>();
    o->kind = PyValue::Kind::Object;
    o->s = g;
    o->items = a;
    return o;
  }

  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& path_;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint32_t, PyPtr> memo_;
};

// ---- writing ----

class Pickler {
 public:
  std::string run(const PyPtr& root) {
    op(0x80);
    op(2);
    value(root);
    op('.');
    return std::move(out_);
  }

 private:
  void op(uint8_t b) { out_ += static_cast<char>(b); }
  void raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  void str(const std::string& s) {
    op('X');
    const uint32_t n = static_cast<uint32_t>(s.size());
    raw(&n, 4);
    raw(s.data(), s.size());
  }
  void global(const std::string& mod, const std::string& name) {
    op('c');
    raw(mod.data(), mod.size());
    op('\n');
    raw(name.data(), name.size());
    op('\n');
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      op(static_cast<uint8_t>(v));
    } else if (v >= 0 && v < 65536) {
      op('M');
      const uint16_t u = static_cast<uint16_t>(v);
      raw(&u, 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      const int32_t u = static_cast<int32_t>(v);
      raw(&u, 4);
    } else {  // LONG1: minimal two's-complement little-endian bytes
      uint8_t b[8];
      std::memcpy(b, &v, 8);
      int n = 8;
      while (n > 1 && ((b[n - 1] == 0 && !(b[n - 2] & 0x80)) || (b[n - 1] == 0xff && (b[n - 2] & 0x80)))) --n;
      op(0x8a);
      op(static_cast<uint8_t>(n));
      raw(b, static_cast<size_t>(n));
    }
  }
  void int_tuple(const std::vector<int64_t>& v) {
    op('(');
    for (auto x : v) integer(x);
    op('t');
  }
  void value(const PyPtr& v) {
    using K = PyValue::Kind;
    switch (v->kind) {
      case K::None: op('N'); return;
      case K::Bool: op(v->b ? 0x88 : 0x89); return;
      case K::Int: integer(v->i); return;
      case K::Float: {
        uint64_t u;
        std::memcpy(&u, &v->f, 8);
        op('G');
        for (int k = 7; k >= 0; --k) op(static_cast<uint8_t>(u >> (8 * k)));
        return;
      }
      case K::Str: str(v->s); return;
      case K::Bytes: {
        op('B');
        const uint32_t n = static_cast<uint32_t>(v->s.size());
        raw(&n, 4);
        raw(v->s.data(), v->s.size());
        return;
      }
      case K::Tuple:
        op('(');
        for (const auto& x : v->items) value(x);
        op('t');
        return;
      case K::List:
        op(']');
        for (size_t i = 0; i < v->items.size(); i += 1000) {
          op('(');
          for (size_t j = i; j < std::min(v->items.size(), i + 1000); ++j) value(v->items[j]);
          op('e');
        }
        return;
      case K::Dict:
        op('}');
        for (size_t i = 0; i < v->dict.size(); i += 1000) {
          op('(');
          for (size_t j = i; j < std::min(v->dict.size(), i + 1000); ++j) {
            value(v->dict[j].first);
            value(v->dict[j].second);
          }
          op('u');
        }
        return;
      case K::Tensor: {
        const TensorRef& r = v->tensor;
        global("torch._utils", "_rebuild_tensor_v2");
        op('(');
        op('(');
        str("storage");
        global("torch", storage_class_name(r.dtype));
        str(r.storage);
        str(r.location);
        integer(r.storage_numel);
        op('t');
        op('Q');
        integer(r.offset);
        int_tuple(r.sizes);
        int_tuple(r.strides);
        op(r.requires_grad ? 0x88 : 0x89);
        global("collections", "OrderedDict");
        op(')');
        op('R');
        op('t');
        op('R');
        return;
      }
      default:
        fail("cannot write a value of type ", v->type_name(), " (", v->s,
             ") to a torch archive; expected dicts, lists, tuples, tensors, strings and numbers");
    }
  }
  std::string out_;
};

uint32_t crc32_update(uint32_t crc, const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

void put16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void put32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void put64(std::string& s, uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }

constexpr uint64_t kMax32 = 0xFFFFFFFFu;
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;  // 1980-01-01, fixed for reproducible bytes

}  // namespace

// ---- PyValue ----

int64_t TensorRef::nbytes() const {
  int64_t n = 1;
  for (auto s : sizes) n *= s;
  return n * static_cast<int64_t>(c10::elementSize(dtype));
}

PyPtr PyValue::none() { return std::make_shared<PyValue>(); }
PyPtr PyValue::boolean(bool v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Bool;
  p->b = v;
  return p;
}
PyPtr PyValue::integer(int64_t v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Int;
  p->i = v;
  return p;
}
PyPtr PyValue::real(double v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Float;
  p->f = v;
  return p;
}
PyPtr PyValue::str(std::string v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Str;
  p->s = std::move(v);
  return p;
}
PyPtr PyValue::make_dict() {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Dict;
  return p;
}
PyPtr PyValue::make_list(std::vector<PyPtr> v) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::List;
  p->items = std::move(v);
  return p;
}
PyPtr PyValue::make_tuple(std::vector<PyPtr> v) {
  auto p = make_list(std::move(v));
  p->kind = Kind::Tuple;
  return p;
}
PyPtr PyValue::make_tensor(TensorRef r) {
  auto p = std::make_shared<PyValue>();
  p->kind = Kind::Tensor;
  p->tensor = std::move(r);
  return p;
}
PyPtr PyValue::get(const std::string& key) const {
  for (const auto& [k, v] : dict)
    if (k->is_str() && k->s == key) return v;
  return nullptr;
}
std::string PyValue::type_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Tensor: return "tensor";
    case Kind::Global: return "class " + s;
    case Kind::Storage: return "storage";
    case Kind::Object: return s + " object";
  }
  return "?";
}

std::string storage_class_name(at::ScalarType dtype) {
  for (const auto& [n, t] : storage_classes())
    if (t == dtype && n != "UntypedStorage") return n;
  fail("dtype ", c10::toString(dtype), " has no torch storage class; expected a dense numeric dtype");
}

std::string pickle_object(const PyPtr& root) { return Pickler().run(root); }

TensorList load_tensor_dict(const LazyArchive& src, const PyPtr& dict, const std::string& what) {
  INSTINCT_CHECK(dict && dict->is_dict(), what, ": is a ", dict ? dict->type_name() : "missing value",
                 ", expected a dict of name -> tensor");
  TensorList out;
  std::unordered_map<std::string, int> seen;
  for (const auto& [k, v] : dict->dict) {
    INSTINCT_CHECK(k->is_str(), what, ": has a key of type ", k->type_name(), ", expected string keys");
    INSTINCT_CHECK(seen.emplace(k->s, 1).second, what, ": key '", k->s, "' occurs twice; the file is malformed");
    INSTINCT_CHECK(v->is_tensor(), what, ": value of key '", k->s, "' is a ", v->type_name(), ", expected a tensor");
    out.emplace_back(k->s, src.load(v->tensor));
  }
  return out;
}

// ---- LazyArchive ----

LazyArchive::LazyArchive(const std::string& path) : path_(path) {
  struct stat st {};
  INSTINCT_CHECK(::stat(path.c_str(), &st) == 0, path, ": cannot open: ", std::strerror(errno));
  INSTINCT_CHECK(!S_ISDIR(st.st_mode), path, ": is a directory, expected a torch.save file");
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    INSTINCT_CHECK(f, path, ": cannot open: ", std::strerror(errno));
    unsigned char head[4] = {0, 0, 0, 0};
    const size_t got = std::fread(head, 1, 4, f);
    std::fclose(f);
    INSTINCT_CHECK(got == 0 || head[0] != 0x80, path, ": legacy (pre-1.6) torch.save format or a plain pickle, not a "
                   "zip archive; re-save it with torch >= 1.6: torch.save(torch.load(path), path)");
    INSTINCT_CHECK(got == 4 && head[0] == 'P' && head[1] == 'K', path,
                   got == 0 ? ": file is empty" : ": not a zip archive", "; expected a torch.save file");
  }
  try {
    reader_ = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const std::exception& e) {
    fail(path, ": truncated or corrupt zip archive (", error_text(e), "); expected a complete torch.save file");
  }
  if (!reader_->hasRecord("data.pkl")) {
    const bool script = reader_->hasRecord("constants.pkl") || reader_->hasRecord("code/__torch__.py");
    fail(path, script ? ": is a TorchScript archive (torch.jit.save); expected a torch.save file"
                      : ": zip archive has no data.pkl; expected a file written by torch.save");
  }
  std::tuple<at::DataPtr, size_t> rec;
  try {
    rec = reader_->getRecord("data.pkl");
  } catch (const std::exception& e) {
    fail(path, ": corrupt archive, cannot read data.pkl (", error_text(e), ")");
  }
  root_ = Unpickler(static_cast<const uint8_t*>(std::get<0>(rec).get()), std::get<1>(rec), path_).run();
}

LazyArchive::~LazyArchive() = default;

std::pair<std::shared_ptr<void>, size_t> LazyArchive::storage_bytes(const std::string& key) const {
  const std::string name = "data/" + key;
  INSTINCT_CHECK(reader_->hasRecord(name), path_, ": storage record '", name, "' is missing; the archive is corrupt");
  try {
    auto rec = reader_->getRecord(name);
    auto holder = std::make_shared<at::DataPtr>(std::move(std::get<0>(rec)));
    return {std::shared_ptr<void>(holder, holder->get()), std::get<1>(rec)};
  } catch (const std::exception& e) {
    fail(path_, ": cannot read storage record '", name, "' (", error_text(e), "); the archive is corrupt");
  }
}

at::Tensor LazyArchive::load(const TensorRef& ref) const {
  auto [data, n] = storage_bytes(ref.storage);
  const size_t need = static_cast<size_t>(ref.storage_numel) * c10::elementSize(ref.dtype);
  INSTINCT_CHECK(n >= need, path_, ": storage record '", ref.storage, "' has ", n, " bytes, expected ", need,
                 "; the archive is corrupt");
  auto storage = at::empty({ref.storage_numel}, at::TensorOptions().dtype(ref.dtype));
  if (need) std::memcpy(storage.data_ptr(), data.get(), need);
  return storage.as_strided(ref.sizes, ref.strides, ref.offset);
}

// ---- ArchiveWriter ----

ArchiveWriter::ArchiveWriter(const std::string& path, uint64_t zip64_from)
    : path_(path), zip64_from_(std::min<uint64_t>(zip64_from, kMax32)) {
  file_ = std::make_unique<AtomicFile>(path);
  out_ = std::fopen(file_->temp_path().c_str(), "wb");
  INSTINCT_CHECK(out_, path, ": cannot create '", file_->temp_path(), "': ", std::strerror(errno));
  static const char kByteorder[] = "little";
  write_record("archive/byteorder", kByteorder, 6);
}

ArchiveWriter::~ArchiveWriter() {
  if (out_) std::fclose(out_);  // the AtomicFile removes the temp file unless committed
}

void ArchiveWriter::write_raw(const void* data, size_t size) {
  if (size && std::fwrite(data, 1, size, out_) != size)
    fail(path_, ": writing '", file_->temp_path(), "' failed: ", std::strerror(errno), " (disk full?)");
  offset_ += size;
}

void ArchiveWriter::write_record(const std::string& name, const void* data, size_t size) {
  INSTINCT_CHECK(!finished_, path_, ": record written after finish()");
  const uint32_t crc = crc32_update(0, static_cast<const uint8_t*>(data), size);
  const bool z64 = size >= zip64_from_;
  // Local header (30 bytes + name + extra); the data starts on a 64-byte boundary like torch's writer.
  std::string extra;
  if (z64) {
    put16(extra, 0x0001);
    put16(extra, 16);
    put64(extra, size);
    put64(extra, size);
  }
  const uint64_t unpadded = offset_ + 30 + name.size() + extra.size() + 4;
  const uint64_t pad = (64 - unpadded % 64) % 64;
  put16(extra, 0x4246);  // "FB": padding, as PyTorchStreamWriter does
  put16(extra, static_cast<uint16_t>(pad));
  extra.append(pad, 'Z');
  std::string h;
  put32(h, 0x04034b50);
  put16(h, z64 ? 45 : 20);
  put16(h, 0);  // flags
  put16(h, 0);  // stored
  put16(h, 0);  // time
  put16(h, kDosDate);
  put32(h, crc);
  put32(h, z64 ? uint32_t(kMax32) : uint32_t(size));
  put32(h, z64 ? uint32_t(kMax32) : uint32_t(size));
  put16(h, static_cast<uint16_t>(name.size()));
  put16(h, static_cast<uint16_t>(extra.size()));
  h += name;
  h += extra;
  entries_.push_back({name, offset_, size, crc});
  write_raw(h.data(), h.size());
  write_raw(data, size);
}

PyPtr ArchiveWriter::add_tensor(const at::Tensor& t_in) {
  at::Tensor t = t_in.detach().to(at::kCPU).resolve_conj().resolve_neg().contiguous();
  TensorRef r;
  r.storage = std::to_string(next_key_++);
  r.dtype = t.scalar_type();
  r.storage_numel = t.numel();
  r.sizes = t.sizes().vec();
  r.strides = t.strides().vec();
  write_record("archive/data/" + r.storage, t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  return PyValue::make_tensor(std::move(r));
}

PyPtr ArchiveWriter::copy_tensor(const LazyArchive& src, const TensorRef& ref) {
  auto key = std::make_pair(&src, ref.storage);
  auto it = copied_.find(key);
  if (it == copied_.end()) {
    auto [data, n] = src.storage_bytes(ref.storage);
    const size_t need = static_cast<size_t>(ref.storage_numel) * c10::elementSize(ref.dtype);
    INSTINCT_CHECK(n >= need, src.path(), ": storage record '", ref.storage, "' has ", n, " bytes, expected ", need,
                   "; the archive is corrupt");
    const std::string out_key = std::to_string(next_key_++);
    write_record("archive/data/" + out_key, data.get(), n);
    it = copied_.emplace(key, out_key).first;
  }
  TensorRef r = ref;
  r.storage = it->second;
  r.location = "cpu";  // loads without map_location on any machine
  return PyValue::make_tensor(std::move(r));
}

void ArchiveWriter::finish(const PyPtr& root) {
  const std::string pkl = pickle_object(root);
  write_record("archive/data.pkl", pkl.data(), pkl.size());
  write_record("archive/version", "3\n", 2);
  // Central directory.
  const uint64_t cd_start = offset_;
  for (const auto& e : entries_) {
    std::string extra;
    const bool zs = e.size >= zip64_from_, zo = e.offset >= zip64_from_;
    if (zs || zo) {
      put16(extra, 0x0001);
      put16(extra, static_cast<uint16_t>((zs ? 16 : 0) + (zo ? 8 : 0)));
      if (zs) {
        put64(extra, e.size);
        put64(extra, e.size);
      }
      if (zo) put64(extra, e.offset);
    }
    std::string h;
    put32(h, 0x02014b50);
    put16(h, (zs || zo) ? 45 : 20);  // version made by
    put16(h, (zs || zo) ? 45 : 20);  // version needed
    put16(h, 0);
    put16(h, 0);
    put16(h, 0);
    put16(h, kDosDate);
    put32(h, e.crc);
    put32(h, zs ? uint32_t(kMax32) : uint32_t(e.size));
    put32(h, zs ? uint32_t(kMax32) : uint32_t(e.size));
    put16(h, static_cast<uint16_t>(e.name.size()));
    put16(h, static_cast<uint16_t>(extra.size()));
    put16(h, 0);  // comment
    put16(h, 0);  // disk
    put16(h, 0);  // internal attributes
    put32(h, 0);  // external attributes
    put32(h, zo ? uint32_t(kMax32) : uint32_t(e.offset));
    h += e.name;
    h += extra;
    write_raw(h.data(), h.size());
  }
  const uint64_t cd_size = offset_ - cd_start, count = entries_.size();
  const bool z64 = cd_start >= zip64_from_ || cd_size >= zip64_from_ || count >= 0xFFFF;
  std::string end;
  if (z64) {
    const uint64_t rec_at = offset_;
    put32(end, 0x06064b50);
    put64(end, 44);
    put16(end, 45);
    put16(end, 45);
    put32(end, 0);
    put32(end, 0);
    put64(end, count);
    put64(end, count);
    put64(end, cd_size);
    put64(end, cd_start);
    put32(end, 0x07064b50);  // locator
    put32(end, 0);
    put64(end, rec_at);
    put32(end, 1);
  }
  put32(end, 0x06054b50);
  put16(end, 0);
  put16(end, 0);
  put16(end, z64 ? 0xFFFF : static_cast<uint16_t>(count));
  put16(end, z64 ? 0xFFFF : static_cast<uint16_t>(count));
  put32(end, z64 ? uint32_t(kMax32) : uint32_t(cd_size));
  put32(end, z64 ? uint32_t(kMax32) : uint32_t(cd_start));
  put16(end, 0);
  write_raw(end.data(), end.size());
  finished_ = true;
  const int rc = std::fclose(out_);
  out_ = nullptr;
  INSTINCT_CHECK(rc == 0, path_, ": closing '", file_->temp_path(), "' failed: ", std::strerror(errno), " (disk full?)");
  file_->commit();
}

}  // namespace instinct::io
