// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title StakeRegistry
/// @notice Staked nodes (committee voters) with their libp2p peer record. Active stake is kept in
/// a Fenwick tree indexed by registration order, so the coordinator samples a node with
/// probability proportional to its stake in O(log maxNodes). Stake leaves through `unbond`
/// (it stops counting at once) and `withdraw` after `unbondDelay` blocks. Only the coordinator,
/// bound once after deployment, may slash. Payments are pulled (`withdraw`).
contract StakeRegistry {
    struct Node {
        uint32 index; // 1-based position in the Fenwick tree; 0 = not registered
        uint64 unbondReadyBlock;
        uint128 stake; // active, sampled stake
        uint128 unbonding; // leaving stake, still slashable until withdrawn
        bytes peerId;
        string[] addrs;
    }

    uint256 public constant MAX_ADDRS = 8;
    uint256 public constant MAX_PEER_BYTES = 256;

    uint256 public immutable minStake;
    uint64 public immutable unbondDelay;
    uint32 public immutable maxNodes; // a power of two
    address public immutable deployer;

    address public coordinator;
    uint32 public nodeCount;
    uint256 public totalStake;
    uint256 public totalUnbonding;
    uint256 public totalCredits;

    mapping(address => Node) private _nodes;
    mapping(uint256 => address) public nodeAt;
    mapping(uint256 => uint256) private _tree;
    mapping(address => uint256) public credits;

    bool private transient _locked;

    event CoordinatorBound(address indexed coordinator);
    event NodeRegistered(address indexed node, uint32 index, uint256 stake, bytes peerId, string[] addrs);
    event PeerUpdated(address indexed node, bytes peerId, string[] addrs);
    event StakeIncreased(address indexed node, uint256 amount, uint256 stake);
    event Unbonding(address indexed node, uint256 amount, uint256 stake, uint256 unbonding, uint64 readyBlock);
    event Slashed(address indexed node, uint256 amount, address indexed beneficiary);
    event Credited(address indexed account, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);

    error BadParameter();
    error NotDeployer();
    error AlreadyBound();
    error NotCoordinator();
    error AlreadyRegistered(address node);
    error NotRegistered(address node);
    error RegistryFull();
    error StakeTooLow(uint256 stake, uint256 minStake);
    error BadAmount();
    error PeerRecordTooLarge();
    error NothingToWithdraw();
    error TransferFailed();
    error Reentrancy();
    error NoStake();

    constructor(uint256 minStake_, uint64 unbondDelay_, uint32 maxNodes_) {
        if (minStake_ == 0 || maxNodes_ == 0 || maxNodes_ & (maxNodes_ - 1) != 0 || maxNodes_ > 1 << 20) {
            revert BadParameter();
        }
        minStake = minStake_;
        unbondDelay = unbondDelay_;
        maxNodes = maxNodes_;
        deployer = msg.sender;
    }

    modifier nonReentrant() {
        if (_locked) revert Reentrancy();
        _locked = true;
        _;
        _locked = false;
    }

    /// @notice Binds the only contract allowed to slash; callable once, by the deployer.
    function bindCoordinator(address coordinator_) external {
        if (msg.sender != deployer) revert NotDeployer();
        if (coordinator != address(0)) revert AlreadyBound();
        if (coordinator_ == address(0)) revert BadParameter();
        coordinator = coordinator_;
        emit CoordinatorBound(coordinator_);
    }

    function register(bytes calldata peerId, string[] memory addrs) external payable {
        Node storage n = _nodes[msg.sender];
        if (n.index != 0) revert AlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (nodeCount >= maxNodes) revert RegistryFull();
        _checkPeer(peerId, addrs);
        uint32 index = ++nodeCount;
        n.index = index;
        n.stake = uint128(msg.value);
        n.peerId = peerId;
        n.addrs = addrs;
        nodeAt[index] = msg.sender;
        totalStake += msg.value;
        _treeAdd(index, msg.value);
        emit NodeRegistered(msg.sender, index, msg.value, peerId, addrs);
    }

    function updatePeer(bytes calldata peerId, string[] memory addrs) external {
        Node storage n = _registered(msg.sender);
        _checkPeer(peerId, addrs);
        n.peerId = peerId;
        n.addrs = addrs;
        emit PeerUpdated(msg.sender, peerId, addrs);
    }

    function topUp() external payable {
        Node storage n = _registered(msg.sender);
        if (msg.value == 0) revert BadAmount();
        uint256 stake = uint256(n.stake) + msg.value;
        if (stake < minStake) revert StakeTooLow(stake, minStake);
        n.stake = uint128(stake);
        totalStake += msg.value;
        _treeAdd(n.index, msg.value);
        emit StakeIncreased(msg.sender, msg.value, stake);
    }

    /// @notice Moves `amount` of active stake to unbonding; withdrawable after `unbondDelay`
    /// blocks (the delay restarts for the whole unbonding balance). What remains must be zero or
    /// at least `minStake`.
    function unbond(uint256 amount) external {
        Node storage n = _registered(msg.sender);
        if (amount == 0 || amount > n.stake) revert BadAmount();
        uint256 rest = n.stake - amount;
        if (rest != 0 && rest < minStake) revert StakeTooLow(rest, minStake);
        n.stake = uint128(rest);
        n.unbonding += uint128(amount);
        uint64 ready = uint64(block.number) + unbondDelay;
        n.unbondReadyBlock = ready;
        totalStake -= amount;
        totalUnbonding += amount;
        _treeSub(n.index, amount);
        emit Unbonding(msg.sender, amount, rest, n.unbonding, ready);
    }

    /// @notice Pays out unbonded stake whose delay has passed plus any credits (pull payment).
    function withdraw() external nonReentrant {
        uint256 amount = credits[msg.sender];
        if (amount != 0) {
            credits[msg.sender] = 0;
            totalCredits -= amount;
        }
        Node storage n = _nodes[msg.sender];
        uint256 unbonded = n.unbonding;
        if (unbonded != 0 && block.number >= n.unbondReadyBlock) {
            n.unbonding = 0;
            totalUnbonding -= unbonded;
            amount += unbonded;
        }
        if (amount == 0) revert NothingToWithdraw();
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }

    /// @notice Takes up to `amount` from `node` (active stake first, then unbonding) and credits
    /// it to `beneficiary`. Only the coordinator. Returns what was taken.
    function slash(address node, uint256 amount, address beneficiary) external returns (uint256 taken) {
        if (msg.sender != coordinator) revert NotCoordinator();
        Node storage n = _nodes[node];
        uint256 fromStake = amount < n.stake ? amount : n.stake;
        if (fromStake != 0) {
            n.stake -= uint128(fromStake);
            totalStake -= fromStake;
            _treeSub(n.index, fromStake);
        }
        uint256 rest = amount - fromStake;
        uint256 fromUnbonding = rest < n.unbonding ? rest : n.unbonding;
        if (fromUnbonding != 0) {
            n.unbonding -= uint128(fromUnbonding);
            totalUnbonding -= fromUnbonding;
        }
        taken = fromStake + fromUnbonding;
        emit Slashed(node, taken, beneficiary);
        if (taken != 0) {
            credits[beneficiary] += taken;
            totalCredits += taken;
            emit Credited(beneficiary, taken);
        }
    }

    /// @notice The node owning the stake unit `r mod totalStake` (stake-weighted sampling).
    function sample(uint256 r) external view returns (address) {
        uint256 total = totalStake;
        if (total == 0) revert NoStake();
        return _find(r % total);
    }

    /// @notice Active stake not held by `x` or `y`.
    function eligibleStake(address x, address y) public view returns (uint256) {
        uint256 wx = _nodes[x].stake;
        uint256 wy = x == y ? 0 : _nodes[y].stake;
        return totalStake - wx - wy;
    }

    /// @notice Stake-weighted sampling over every node but `x` and `y` (the dispute's parties):
    /// `r mod eligibleStake` is mapped past the parties' stake ranges, so their stake can
    /// neither be drawn nor crowd out the others. O(log maxNodes).
    function sampleExcluding(uint256 r, address x, address y) external view returns (address) {
        uint256 avail = eligibleStake(x, y);
        if (avail == 0) revert NoStake();
        (uint256 sx, uint256 wx, uint256 sy, uint256 wy) = _excludedRanges(x, y);
        return _find(_skip(r % avail, sx, wx, sy, wy));
    }

    /// @notice Up to `seats` distinct nodes, none of them `x` or `y`, drawn stake-weighted with
    /// the random words keccak256(seed, t) for t = 0 .. attempts-1 (repeats are rejected); empty
    /// when no other node has stake. The committee draw of the coordinator.
    function sampleCommittee(bytes32 seed, uint256 seats, uint256 attempts, address x, address y)
        external
        view
        returns (address[] memory out)
    {
        out = new address[](seats);
        uint256 count = 0;
        uint256 avail = eligibleStake(x, y);
        if (avail != 0) {
            (uint256 sx, uint256 wx, uint256 sy, uint256 wy) = _excludedRanges(x, y);
            for (uint256 t = 0; t < attempts && count < seats; ++t) {
                uint256 r = uint256(keccak256(abi.encode(seed, t)));
                address node = _find(_skip(r % avail, sx, wx, sy, wy));
                bool dup = false;
                for (uint256 j = 0; j < count; ++j) {
                    if (out[j] == node) {
                        dup = true;
                        break;
                    }
                }
                if (!dup) out[count++] = node;
            }
        }
        assembly {
            mstore(out, count)
        }
    }

    /// The stake ranges of x and y, sorted by start; (0, 0) for one without stake.
    function _excludedRanges(address x, address y)
        private
        view
        returns (uint256 sx, uint256 wx, uint256 sy, uint256 wy)
    {
        (sx, wx) = _range(x);
        (sy, wy) = x == y ? (0, 0) : _range(y);
        if (wy != 0 && (wx == 0 || sy < sx)) {
            (sx, wx, sy, wy) = (sy, wy, sx, wx);
        }
    }

    /// Maps t in [0, eligible) onto the full stake line, jumping over the excluded ranges.
    function _skip(uint256 t, uint256 sx, uint256 wx, uint256 sy, uint256 wy) private pure returns (uint256) {
        if (wx != 0 && t >= sx) t += wx;
        if (wy != 0 && t >= sy) t += wy;
        return t;
    }

    function nodeInfo(address node)
        external
        view
        returns (uint32 index, uint256 stake, uint256 unbonding, uint64 unbondReadyBlock)
    {
        Node storage n = _nodes[node];
        return (n.index, n.stake, n.unbonding, n.unbondReadyBlock);
    }

    function stakeOf(address node) external view returns (uint256) {
        return _nodes[node].stake;
    }

    function peerOf(address node) external view returns (bytes memory peerId, string[] memory addrs) {
        Node storage n = _nodes[node];
        return (n.peerId, n.addrs);
    }

    function _registered(address node) private view returns (Node storage n) {
        n = _nodes[node];
        if (n.index == 0) revert NotRegistered(node);
    }

    function _checkPeer(bytes calldata peerId, string[] memory addrs) private pure {
        if (peerId.length > MAX_PEER_BYTES || addrs.length > MAX_ADDRS) revert PeerRecordTooLarge();
        for (uint256 i = 0; i < addrs.length; ++i) {
            if (bytes(addrs[i]).length > MAX_PEER_BYTES) revert PeerRecordTooLarge();
        }
    }

    /// The smallest index whose prefix sum exceeds `target` (target < totalStake).
    function _find(uint256 target) private view returns (address) {
        uint256 pos = 0;
        for (uint256 step = maxNodes; step != 0; step >>= 1) {
            uint256 next = pos + step;
            uint256 w = _tree[next];
            if (w <= target) {
                pos = next;
                target -= w;
            }
        }
        return nodeAt[pos + 1];
    }

    /// [start, start + stake) is `node`'s slice of the stake line; (0, 0) when it has none.
    function _range(address node) private view returns (uint256 start, uint256 weight) {
        Node storage n = _nodes[node];
        weight = n.stake;
        if (weight == 0) return (0, 0);
        for (uint256 i = n.index - 1; i != 0; i -= i & (~i + 1)) {
            start += _tree[i];
        }
    }

    function _treeAdd(uint256 i, uint256 delta) private {
        uint256 size = maxNodes;
        for (; i <= size; i += i & (~i + 1)) {
            _tree[i] += delta;
        }
    }

    function _treeSub(uint256 i, uint256 delta) private {
        uint256 size = maxNodes;
        for (; i <= size; i += i & (~i + 1)) {
            _tree[i] -= delta;
        }
    }
}
