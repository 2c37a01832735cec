// Hostile data.pkl contents given to io::unpickle directly: the allowlist of Python globals, tensor
// layouts that overflow or reach past their storage, and trees that would exhaust the stack or the
// memory of whoever walks them. (tests/cli/hostile_files.sh gives whole files to the tools.)
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "instinct/io/pickle.h"
#include "test_helpers.h"

namespace io = instinct::io;
using instinct::test::error_of;
using namespace std::string_literals;

namespace {

io::PyPtr parse(const std::string& pkl) { return io::unpickle(pkl.data(), pkl.size(), "x.pkl"); }
std::string error_parsing(const std::string& pkl) { return error_of([&] { parse(pkl); }); }

// Protocol-2 pieces, as torch.save writes them.
std::string str(const std::string& s) {
  std::string n(4, '\0');
  const uint32_t len = uint32_t(s.size());
  std::memcpy(n.data(), &len, 4);
  return "X" + n + s;
}
std::string integer(int64_t v) {  // LONG1, 8 bytes: any int64
  std::string b(8, '\0');
  std::memcpy(b.data(), &v, 8);
  return "\x8a\x08"s + b;
}
std::string tuple(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (auto x : v) s += integer(x);
  return s + "t";
}
std::string tensor(const std::string& key, int64_t numel, int64_t offset, const std::vector<int64_t>& size,
                   const std::vector<int64_t>& stride) {
  const std::string storage = "(" + str("storage") + "ctorch\nFloatStorage\n" + str(key) + str("cpu") + integer(numel) + "tQ";
  return "ctorch._utils\n_rebuild_tensor_v2\n(" + storage + integer(offset) + tuple(size) + tuple(stride) +
         "\x89" "ccollections\nOrderedDict\n)Rt" "R";
}
std::string state(const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s = "\x80\x02}(";
  for (const auto& [k, v] : items) s += str(k) + v;
  return s + "u.";
}

}  // namespace

TEST(PickleHostile, GlobalsOutsideTorchSaveAreRefusedWhereNamed) {
  for (const char* g : {"posix\nsystem", "os\nsystem", "__builtin__\neval", "builtins\nexec", "builtins\ngetattr",
                        "builtins\ndict", "subprocess\nPopen", "torch.serialization\nload", "torch\nload",
                        "torch._utils\n_rebuild_device_tensor_from_numpy", "numpy.core.multiarray\nscalar",
                        "collections\ndefaultdict", "torch.storage\n_load_from_bytes"}) {
    std::string name = g;
    SCOPED_TRACE(name);
    name[name.find('\n')] = '.';
    // Named and called with an argument: refused at the name, before the call.
    const std::string msg = error_parsing("\x80\x02}X\x01\x00\x00\x00xc"s + g + "\n" + str("touch /tmp/pwned") + "\x85Rs.");
    EXPECT_NE(msg.find("x.pkl: data.pkl names the Python global '" + name + "' (byte 9)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("nothing was executed"), std::string::npos) << msg;
  }
  // STACK_GLOBAL (protocol 4): same refusal; a newline in the name does not break the line.
  std::string msg = error_parsing("\x80\x04\x8c\x05posix\x8c\x06system\x93."s);
  EXPECT_NE(msg.find("'posix.system' (byte 17)"), std::string::npos) << msg;
  msg = error_parsing("\x80\x04\x8c\x02os\x8c\x07sys\ntem\x93."s);
  EXPECT_NE(msg.find("'os.sys\\x0atem'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  EXPECT_NE(error_parsing("\x80\x04K\x01K\x02\x93."s).find("STACK_GLOBAL of a int and a int"), std::string::npos);
  EXPECT_NE(error_parsing("\x80\x04\x8c\x05numpy\x8c\x05" "dtype\x93."s).find("save numpy values as Python numbers or tensors"),
            std::string::npos);
}

TEST(PickleHostile, GlobalsTorchSaveWritesAreAccepted) {
  for (const char* g : {"torch._utils\n_rebuild_tensor", "torch._utils\n_rebuild_tensor_v2", "torch._utils\n_rebuild_parameter",
                        "torch._utils\n_rebuild_parameter_with_state", "torch._tensor\n_rebuild_from_type_v2",
                        "torch\nTensor", "torch.nn.parameter\nParameter", "collections\nOrderedDict", "torch\nSize",
                        "torch\ndevice", "torch\nfloat32", "torch\nbfloat16", "_codecs\nencode", "torch\nFloatStorage",
                        "torch\nBFloat16Storage", "torch\nUntypedStorage"}) {
    SCOPED_TRACE(g);
    io::PyPtr v;
    EXPECT_NO_THROW(v = parse("\x80\x02\x63"s + g + "\n."));
    ASSERT_TRUE(v);
    EXPECT_EQ(v->kind, io::PyValue::Kind::Global);
  }
  // An allowed class that is not a tensor or dict stays an Object node for the caller to reject.
  const auto size = parse("\x80\x02\x63torch\nSize\n((K\x02K\x03tt" "R."s);
  EXPECT_EQ(size->kind, io::PyValue::Kind::Object);
  EXPECT_EQ(size->s, "torch.Size");
}

TEST(PickleHostile, TensorLayoutsAreCheckedWithoutOverflow) {
  const auto ok = parse(state({{"w", tensor("0", 12, 2, {2, 5}, {5, 1})}}));
  const io::TensorRef& r = ok->get("w")->tensor;
  EXPECT_EQ(r.sizes, (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(r.nbytes(), 40);
  const int64_t big = int64_t(1) << 62;
  auto err = [&](const std::string& t) { return error_parsing(state({{"w", t}})); };
  EXPECT_NE(err(tensor("0", -5, 0, {0}, {1})).find("storage '0' claims -5 elements of Float"), std::string::npos);
  EXPECT_NE(err(tensor("0", big, 0, {4}, {1})).find("claims 4611686018427387904 elements"), std::string::npos);
  EXPECT_NE(err(tensor("0", 4, 0, {big, 4}, {0, 0})).find("[4611686018427387904, 4], whose element count overflows int64"),
            std::string::npos);
  EXPECT_NE(err(tensor("0", 4, 0, {big / 2, 1}, {0, 0})).find("overflows int64"), std::string::npos);  // x 4 bytes
  EXPECT_NE(err(tensor("0", 4, 0, {-1, 4}, {4, 1})).find("size -1 and stride 4 in dimension 0"), std::string::npos);
  EXPECT_NE(err(tensor("0", 4, 0, {2, 2}, {-1, 1})).find("non-negative"), std::string::npos);
  EXPECT_NE(err(tensor("0", 4, -1, {1}, {1})).find("storage offset -1"), std::string::npos);
  EXPECT_NE(err(tensor("0", 4, 100, {4}, {1})).find("reaches element 103 of a storage with 4 elements"), std::string::npos);
  EXPECT_NE(err(tensor("0", 4, 0, {2, 2}, {big, big})).find("reaches past element 2^63"), std::string::npos);
  EXPECT_NE(err(tensor("0", 4, 5, {0}, {1})).find("starts at element 5 of a storage with 4 elements"), std::string::npos);
  EXPECT_NO_THROW(parse(state({{"w", tensor("0", 4, 4, {0, big}, {1, 1})}})));  // empty, at the end
  const std::string two = error_parsing(state({{"a", tensor("0", 4, 0, {4}, {1})}, {"b", tensor("0", 1 << 20, 0, {1}, {1})}}));
  EXPECT_NE(two.find("storage '0' is declared as 4 x Float and as 1048576 x Float"), std::string::npos) << two;
  // nbytes() of a hand-made reference overflows loudly instead of wrapping.
  io::TensorRef h;
  h.sizes = {big, 8};
  EXPECT_NE(error_of([&] { h.nbytes(); }).find("overflows int64"), std::string::npos);
}

TEST(PickleHostile, TreesThatWouldExhaustStackOrMemoryAreRefused) {
  // 300000 nested lists (MARK ... LIST): refused, and freed without recursion.
  const int n = 300000;
  std::string deep = "\x80\x02" + std::string(n, '(') + std::string(n, 'l') + ".";
  EXPECT_NE(error_parsing(deep).find("more than 1000 levels"), std::string::npos);
  // The same chain left unfinished on the stack when the pickle ends.
  EXPECT_NE(error_parsing("\x80\x02" + std::string(n, '(') + std::string(n, 'l')).find("unexpected end"), std::string::npos);
  // 1000 levels are fine.
  EXPECT_NO_THROW(parse("\x80\x02" + std::string(999, '(') + std::string(999, 'l') + "."));
  // A list appended to itself.
  EXPECT_NE(error_parsing("\x80\x02]q\x00h\x00" "a."s).find("contains itself (a list)"), std::string::npos);
  // memo k+1 = (memo k, memo k), 60 times: 2^60 values once expanded.
  std::string laughs = "\x80\x02]q\x00K\x00" "a"s;
  for (int k = 0; k < 60; ++k) laughs += "(h"s + char(k) + "h" + char(k) + "tq" + char(k + 1);
  EXPECT_NE(error_parsing(laughs + ".").find("expands to more than"), std::string::npos);
  // Modest sharing, as a dict holding one tensor under two keys, is fine.
  EXPECT_NO_THROW(parse("\x80\x02}(X\x01\x00\x00\x00" "a]q\x01X\x01\x00\x00\x00" "bh\x01u."s));
}
