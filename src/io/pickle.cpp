#include "instinct/io/pickle.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "instinct/common/error.h"

namespace instinct::io {
namespace {

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
          fail(path_, ": corrupt or unsupported data.pkl: pickle opcode ", hex, " at byte ", pos_ - 1,
               ", which torch.save never writes; expected a file written by torch.save");
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
    INSTINCT_CHECK(n <= 8, path_, ": data.pkl holds an integer wider than 64 bits (at byte ", pos_,
                   "); expected values that fit in int64");
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

}  // namespace

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

PyPtr unpickle(const void* data, size_t size, const std::string& path) {
  return Unpickler(static_cast<const uint8_t*>(data), size, path).run();
}

}  // namespace instinct::io
